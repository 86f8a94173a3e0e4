"""course_lib.blackbox: zeroth-order gradient estimates against closed forms, NES and Square
against their query budgets, the box, white-box PGD, and a model whose backward pass raises."""

import math

import pytest
import torch
from torch import nn

from course_lib import attacks, blackbox, models, train
from course_lib.data import load_dataset
from strategies import random_case

pytestmark = pytest.mark.attacks

TOL = 1e-6  # float32 rounding of (x + delta) - x, as in tests/test_attacks.py
D = 10
RANDOM_MODES = [("gaussian", False), ("gaussian", True), ("sphere", False), ("sphere", True)]


def _quadratic(seed: int):
    """f(x) = x^T A x / 2 + b^T x per row, with A symmetric: gradient A x + b, and a point x0."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(D, D, generator=g, dtype=torch.float64)
    a, b = (m + m.T) / 2, torch.randn(D, generator=g, dtype=torch.float64)
    x0 = torch.rand(D, generator=g, dtype=torch.float64)
    f = lambda z: 0.5 * ((z @ a) * z).sum(1) + z @ b  # noqa: E731
    f.gradient = lambda z: z @ a + b
    return f, a @ x0 + b, x0


def _linear(seed: int):
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    return (lambda z: z @ b), b, torch.rand(D, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------- the estimators


@pytest.mark.parametrize("distribution, antithetic", RANDOM_MODES)
@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_random_estimates_are_unbiased_for_the_gradient(distribution, antithetic, kind):
    # for a linear or quadratic f, smoothing only adds a constant: the smoothed gradient is the gradient
    f, grad, x0 = (_linear if kind == "linear" else _quadratic)(3)
    rows = 4000  # one estimate per row, each with its own directions
    est, _ = blackbox.zo_gradient(f, x0.expand(rows, D).clone(), num_queries=4, mu=0.5, distribution=distribution,
                                  antithetic=antithetic, generator=torch.Generator().manual_seed(1))
    mean, se = est.mean(0), est.std(0) / math.sqrt(rows)
    assert ((mean - grad).abs() <= 5 * se).all(), ((mean - grad) / se)
    assert se.max() < 0.05 * grad.norm()  # the test has the power to see a wrong scale


@pytest.mark.parametrize("distribution, antithetic", RANDOM_MODES)
def test_error_falls_as_d_over_q(distribution, antithetic):
    # on a linear f the estimate is the mean of m i.i.d. (u^T b) u phi: its mean squared error is
    # (d + 1)|b|^2 / m for Gaussian u and (d - 1)|b|^2 / m on the sphere (fourth moments of u)
    f, b, x0 = _linear(0)
    rows = 1000
    mse = {}
    for q in (25, 400):
        est, _ = blackbox.zo_gradient(f, x0.expand(rows, D).clone(), num_queries=q, mu=0.1, antithetic=antithetic,
                                      distribution=distribution, generator=torch.Generator().manual_seed(q))
        m = q // 2 if antithetic else q
        predicted = (D + 1 if distribution == "gaussian" else D - 1) * b.square().sum() / m
        mse[q] = (est - b).square().sum(1).mean()
        assert 0.85 < mse[q] / predicted < 1.15, (q, mse[q] / predicted)
    assert mse[25] > 10 * mse[400]


def test_coordinate_differences_are_exact_on_a_quadratic():
    f, _, _ = _quadratic(5)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, D, generator=g, dtype=torch.float64)
    exact = f.gradient(x)
    for q in (2 * D, 2 * D + 5):
        est, used = blackbox.zo_gradient(f, x, num_queries=q, mu=0.3, distribution="coordinate")
        assert used == 2 * D
        torch.testing.assert_close(est, exact, rtol=0, atol=1e-12)


def test_coordinate_differences_are_second_order_in_mu():
    # central differences of sum(sin): error mu^2 / 6 |sin'''| at most, falling 4x when mu halves
    x = torch.rand(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    errors = []
    for mu in (0.02, 0.01):
        est, _ = blackbox.zo_gradient(lambda z: z.sin().sum(1), x, num_queries=2 * D, mu=mu, distribution="coordinate")
        errors.append((est - x.cos()).abs().max())
        assert errors[-1] <= mu**2 / 6 + 1e-12
    assert 3.5 < errors[0] / errors[1] < 4.5


def test_random_coordinates_are_unbiased_and_use_m_of_them():
    f, grad, x0 = _quadratic(2)
    rows, q = 4000, 6  # m = 3 of the 10 coordinates per example, scaled by 10 / 3
    est, used = blackbox.zo_gradient(f, x0.expand(rows, D).clone(), num_queries=q, mu=0.2, distribution="coordinate",
                                     generator=torch.Generator().manual_seed(0))
    assert used == q and ((est != 0).sum(1) == 3).all()
    assert len({tuple(r.nonzero().squeeze(1).tolist()) for r in est[:50]}) > 10  # each example draws its own
    mean, se = est.mean(0), est.std(0) / math.sqrt(rows)
    assert ((mean - grad).abs() <= 5 * se).all()


class _CountingLoss:
    def __init__(self, f):
        self.f, self.rows = f, []

    def __call__(self, z):
        self.rows.append(z.shape[0])
        return self.f(z)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_query_counts_are_exact_and_calls_are_batched(n, chunk_size):
    f, _, _ = _quadratic(0)
    x = torch.rand(n, D, dtype=torch.float64)
    modes = [(dist, anti) for dist, anti in RANDOM_MODES] + [("coordinate", False), ("coordinate", True)]
    for distribution, antithetic in modes:
        for q in (2, 3, 9, 2 * D, 2 * D + 3, 50):
            counting = _CountingLoss(f)
            _, used = blackbox.zo_gradient(counting, x, num_queries=q, mu=0.1, distribution=distribution,
                                           antithetic=antithetic, chunk_size=chunk_size)
            if distribution == "coordinate":
                expected = 2 * min(q // 2, D)
            else:
                expected = 2 * (q // 2) if antithetic else q + 1
            assert used == expected and sum(counting.rows) == n * used
            assert all(r % n == 0 and r <= max(chunk_size, 2 * n) for r in counting.rows)
            if chunk_size == 4096:  # everything fits: the base point and one call for all the rest
                assert len(counting.rows) == (1 if antithetic or distribution == "coordinate" else 2)


def test_a_given_fx_saves_one_query_and_changes_nothing():
    f, _, x0 = _quadratic(1)
    x = x0.expand(4, D).clone()
    kw = dict(num_queries=8, mu=0.1)
    with_base, q1 = blackbox.zo_gradient(f, x, generator=torch.Generator().manual_seed(0), **kw)
    given, q2 = blackbox.zo_gradient(f, x, fx=f(x), generator=torch.Generator().manual_seed(0), **kw)
    assert (q1, q2) == (9, 8)
    torch.testing.assert_close(with_base, given, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_estimates_keep_dtype_and_follow_the_generator(dtype):
    x = torch.rand(2, 1, 3, 3, dtype=dtype)
    f = lambda z: z.flatten(1).square().sum(1)  # noqa: E731
    runs = [blackbox.zo_gradient(f, x, num_queries=5, mu=0.01, generator=torch.Generator().manual_seed(s))[0]
            for s in (0, 0, 1)]
    assert runs[0].dtype == dtype and runs[0].shape == x.shape
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    torch.testing.assert_close(  # a quadratic: the exact answer 2x, up to rounding of the differences
        blackbox.zo_gradient(f, x, num_queries=18, mu=0.01, distribution="coordinate")[0], 2 * x,
        rtol=0, atol=1e-2 if dtype == torch.float32 else 1e-10)


# ---------------------------------------------------------------- the attacks


def _check_ball_box_budget(x, x_adv, eps, used, queries, counter):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x).abs().max() <= eps + TOL
    assert used.dtype == torch.int64 and used.shape == (x.shape[0],)
    assert (used >= 1).all() and (used <= queries).all()
    assert counter.queries == int(used.sum())


def _misclassified(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) != y


@pytest.mark.parametrize("seed", range(30))
def test_attacks_stay_in_ball_and_box_within_budget(seed):
    model, x, y, eps, g = random_case(seed)
    queries = int(torch.randint(1, 60, (), generator=g))
    x_before = x.clone()
    for nq, distribution, antithetic in [(1 + seed % 7, "gaussian", False), (2 + seed % 5, "sphere", True),
                                         (2 + seed % 9, "coordinate", False)]:
        counter = blackbox.QueryCounter(model)
        x_adv, used = blackbox.nes_attack(counter, x, y, eps, queries=queries, num_queries=nq, mu=1e-3,
                                          distribution=distribution, antithetic=antithetic, generator=g,
                                          loss=["margin", "ce"][seed % 2])
        _check_ball_box_budget(x, x_adv, eps, used, queries, counter)
        # a round costs 1 + nq at most: an example that stopped earlier was broken
        stopped = used <= queries - 1 - nq
        assert (_misclassified(model, x_adv, y)[stopped]).all() or eps == 0
    if x.ndim == 4:
        counter = blackbox.QueryCounter(model)
        x_adv, used = blackbox.square_attack(counter, x, y, eps, queries=queries, p_init=[0.05, 0.3, 1.0][seed % 3],
                                             generator=g)
        _check_ball_box_budget(x, x_adv, eps, used, queries, counter)
        if eps > 0:  # Square stops early only on success
            assert _misclassified(model, x_adv, y)[used < queries].all()
    assert torch.equal(x, x_before)


class _TaggedRecorder:
    """Scores with ``model`` and files each row under its example, told apart by a tag pixel."""

    def __init__(self, model, n):
        self.model, self.n, self.rows = model, n, [[] for _ in range(n)]

    def __call__(self, z):
        out = self.model(z)
        for row, scores in zip(z, out):
            self.rows[round(float(row.flatten()[0]) * (self.n - 1))].append((row.clone(), scores.clone()))
        return out


def _tagged_batch(seed, n=5, shape=(2, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g, dtype=torch.float64)
    x[x < 0.15] = 0.0
    x.view(n, -1)[:, 0] = torch.arange(n, dtype=torch.float64) / (n - 1)  # 0.25 apart: eps + mu u stay nearer
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 12), nn.ReLU(), nn.Linear(12, 3)).double()
    return model, x, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("seed", range(6))
def test_every_query_is_counted_for_its_own_example(seed):
    model, x, y = _tagged_batch(seed)
    eps, queries = 0.05, 40 + 7 * seed
    rec = _TaggedRecorder(model, len(x))
    _, used = blackbox.nes_attack(rec, x, y, eps, queries=queries, num_queries=3 + seed, antithetic=seed % 2 == 0,
                                  generator=torch.Generator().manual_seed(seed))
    assert [len(r) for r in rec.rows] == used.tolist()
    rec = _TaggedRecorder(model, len(x))
    x_adv, used = blackbox.square_attack(rec, x, y, eps, queries=queries, p_init=0.2,
                                         generator=torch.Generator().manual_seed(seed))
    assert [len(r) for r in rec.rows] == used.tolist()
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    h, w = x.shape[2:]
    for i, rows in enumerate(rec.rows):
        assert torch.equal(rows[0][0], x[i])  # query 1: the clean input
        margins = [float(blackbox._margin(s[None], y[i:i + 1])) for _, s in rows]
        if len(rows) == 1:
            assert margins[0] < 0  # misclassified already
            continue
        for point, _ in rows[1:]:  # every later query is a vertex of the ball intersected with [0, 1]
            assert ((point == lo[i]) | (point == hi[i])).all()
        best, best_margin = rows[1][0], margins[1]  # the stripes, taken whatever their margin
        for k in range(2, len(rows)):
            point = rows[k][0]
            changed = (point != best).any(0).nonzero()  # (pixels, 2): rows and columns that moved
            side = min(max(round(math.sqrt(blackbox._p_selection(0.2, k - 2, queries) * h * w)), 1), h, w)
            assert len(changed) > 0, "a proposal equal to the current point was queried"
            assert (changed.amax(0) - changed.amin(0) < side).all(), "the change is not one square of the schedule"
            if margins[k] < best_margin:  # kept only if it lowers the margin
                best, best_margin = point, margins[k]
        assert torch.equal(x_adv[i], best)
        assert best_margin < 0 or used[i] == queries  # stopped early only when broken


def test_square_replaces_a_no_op_sign_by_a_uniform_other():
    # every square already on its upper face: the all-plus signs would change nothing, so they are
    # replaced, as the reference code's redrawing does, uniformly by one of the 2^c - 1 others
    n, c = 14000, 3
    lo, hi = torch.zeros(n, c, 4, 4), torch.full((n, c, 4, 4), 0.5)
    best = hi.clone()
    index, old, new = blackbox._try_square(best, lo, hi, 2, torch.Generator().manual_seed(0))
    assert torch.equal(old, hi[index]) and torch.equal(best[index], new)
    up = new.flatten(2).amax(2) > 0  # (n, c): the sign of each channel's square
    assert (up == new.flatten(2).amin(2).gt(0)).all()  # one sign per channel and square
    counts = torch.bincount((up.long() * torch.tensor([1, 2, 4])).sum(1), minlength=8)
    assert counts[7] == 0  # never the no-op
    expected, se = n / 7, math.sqrt(n * (1 / 7) * (6 / 7))
    assert ((counts[:7] - expected).abs() < 5 * se).all(), counts


def test_nes_with_exact_coordinate_gradients_is_pgd_on_the_margin():
    # with all 2d central differences on a linear model the estimate is the gradient (up to rounding),
    # so each NES round is one PGD step; an example stops at the first step that breaks it
    torch.manual_seed(0)
    d, steps, eps, alpha = 12, 5, 0.1, 0.03
    model = nn.Linear(d, 4).double()
    x = torch.rand(40, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(2))
    round_cost = 2 * d + 1
    x_adv, used = blackbox.nes_attack(model, x, y, eps, queries=1 + steps * round_cost, alpha=alpha,
                                      num_queries=2 * d, mu=1e-6, distribution="coordinate")
    taken = (used - 1) // round_cost
    assert ((used - 1) % round_cost == 0).all() and taken.max() == steps and taken.min() < steps
    for t in range(steps + 1):
        pgd = x if t == 0 else attacks.pgd(model, x, y, eps, alpha, t, random_start=False, loss="margin")
        torch.testing.assert_close(x_adv[taken == t], pgd[taken == t], rtol=0, atol=1e-12)
    assert _misclassified(model, x_adv, y)[taken < steps].all()  # stopped early: broken


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        return z.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("a black-box attack asked for a gradient")


class _Sealed(nn.Module):
    def __init__(self):
        super().__init__()
        self.net, self.grad_enabled = models.mlp((1, 4, 4), 3, hidden=(8,)), []

    def forward(self, z):
        self.grad_enabled.append(torch.is_grad_enabled())
        return _NoBackward.apply(self.net(z))


def test_black_box_attacks_never_use_autograd():
    torch.manual_seed(0)
    model = _Sealed()
    x, y = torch.rand(6, 1, 4, 4), torch.randint(0, 3, (6,))
    with pytest.raises(RuntimeError, match="black-box"):  # the trap works: white-box PGD falls in
        attacks.pgd(model, x, y, 0.1, 0.02, 2)
    model.grad_enabled.clear()
    blackbox.zo_gradient(blackbox.query_loss(model, y), x, num_queries=5, mu=1e-3)
    blackbox.nes_attack(model, x, y, 0.3, queries=50)
    blackbox.square_attack(model, x, y, 0.3, queries=50)
    assert len(model.grad_enabled) > 10 and not any(model.grad_enabled)
    assert all(p.grad is None for p in model.parameters())


def test_square_schedule_matches_the_reference_p_selection():
    def reference(p, it):  # the piecewise constant table of Andriushchenko et al.'s p_selection
        for bound, halvings in [(10, 0), (50, 1), (200, 2), (500, 3), (1000, 4), (2000, 5), (4000, 6),
                                (6000, 7), (8000, 8)]:
            if it <= bound:
                return p / 2**halvings
        return p / 512

    for it in list(range(0, 60)) + [199, 200, 201, 500, 501, 999, 1001, 4000, 4001, 8000, 8001, 9999]:
        assert blackbox._p_selection(0.05, it, 10000) == reference(0.05, it)
    for budget in (100, 1000, 3000):  # rescaled to the budget
        for it in range(budget):
            assert blackbox._p_selection(0.3, it, budget) == reference(0.3, int(it / budget * 10000))


def test_query_counter_counts_rows_of_a_module_or_a_function():
    for model in (nn.Linear(3, 2), lambda z: z[:, :2] * 2):
        counter = blackbox.QueryCounter(model)
        for n in (4, 1, 7):
            counter(torch.rand(n, 3))
        assert (counter.calls, counter.queries, counter.rows_per_call) == (3, 12, [4, 1, 7])
        counter.reset()
        assert (counter.calls, counter.queries, counter.rows_per_call) == (0, 0, [])


@pytest.fixture(scope="module")
def digits_model():
    torch.manual_seed(0)
    data = load_dataset("digits")
    (x_tr, y_tr), (x_te, y_te) = data.train.tensors, data.test.tensors
    model = models.mlp(data.input_shape, 10, hidden=(64,))
    train.train(model, [(x_tr[i:i + 64], y_tr[i:i + 64]) for i in range(0, len(x_tr), 64)], epochs=15, lr=3e-3,
                progress=False)
    model.eval()
    keep = ~_misclassified(model, x_te, y_te)
    return model, x_te[keep][:100], y_te[keep][:100]


@pytest.mark.parametrize("eps", [0.1, 0.2])
def test_square_and_nes_break_a_digits_model_about_as_often_as_pgd(digits_model, eps):
    model, x, y = digits_model
    pgd = _misclassified(model, attacks.pgd(model, x, y, eps, eps / 4, 20, loss="margin",
                                            generator=torch.Generator().manual_seed(0)), y).float().mean()
    budget = 1000
    counter = blackbox.QueryCounter(model)
    x_sq, used_sq = blackbox.square_attack(counter, x, y, eps, queries=budget,
                                           generator=torch.Generator().manual_seed(0))
    _check_ball_box_budget(x, x_sq, eps, used_sq, budget, counter)
    counter = blackbox.QueryCounter(model)
    x_nes, used_nes = blackbox.nes_attack(counter, x, y, eps, queries=budget,
                                          generator=torch.Generator().manual_seed(0))
    _check_ball_box_budget(x, x_nes, eps, used_nes, budget, counter)
    square, nes = (_misclassified(model, xa, y).float().mean() for xa in (x_sq, x_nes))
    assert square >= pgd - 0.05, (square, pgd)
    if eps == 0.2:  # NES follows noisy signs: 0.84 here, and half of PGD at eps 0.1
        assert pgd > 0.9 and nes >= pgd - 0.25 and used_sq.float().mean() < 100, (nes, pgd)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_black_box_attacks_run_on_cuda_and_stay_there():
    model, x, y = _tagged_batch(0)
    model, x, y = model.cuda(), x.cuda(), y.cuda()
    for gen in (torch.Generator("cuda").manual_seed(0), torch.Generator().manual_seed(0)):
        for x_adv, used in (blackbox.nes_attack(model, x, y, 0.1, queries=60, generator=gen),
                            blackbox.square_attack(model, x, y, 0.1, queries=60, generator=gen)):
            assert x_adv.device == x.device and used.device == x.device and (x_adv - x).abs().max() <= 0.1 + TOL
        g, _ = blackbox.zo_gradient(blackbox.query_loss(model, y), x, num_queries=4, mu=1e-3, generator=gen)
        assert g.device == x.device


# ---------------------------------------------------------------- bad input


def _bad_calls():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 2])
    f = lambda z: z.flatten(1).sum(1)  # noqa: E731
    zo = lambda **kw: blackbox.zo_gradient(f, x, **(dict(num_queries=4, mu=0.1) | kw))  # noqa: E731
    nes = lambda **kw: blackbox.nes_attack(model, kw.pop("x", x), kw.pop("y", y), kw.pop("eps", 0.1),  # noqa: E731
                                           **(dict(queries=10) | kw))
    sq = lambda **kw: blackbox.square_attack(model, kw.pop("x", x), kw.pop("y", y), kw.pop("eps", 0.1),  # noqa: E731
                                             **(dict(queries=10) | kw))
    return [
        (lambda: zo(num_queries=0), "num_queries"), (lambda: zo(mu=0.0), "mu"), (lambda: zo(mu=-1.0), "mu"),
        (lambda: zo(distribution="uniform"), "distribution"), (lambda: zo(antithetic=1), "antithetic"),
        (lambda: zo(num_queries=1, antithetic=True), "num_queries"),
        (lambda: zo(num_queries=1, distribution="coordinate"), "num_queries"),
        (lambda: zo(chunk_size=0), "chunk_size"), (lambda: zo(generator=0), "generator"),
        (lambda: zo(fx=torch.zeros(3)), "fx"),
        (lambda: blackbox.zo_gradient(f, torch.ones(2, 3, dtype=torch.int64), num_queries=2, mu=0.1), "x must"),
        (lambda: blackbox.zo_gradient(f, torch.ones(3), num_queries=2, mu=0.1), "x must"),
        (lambda: blackbox.zo_gradient(lambda z: z, x, num_queries=2, mu=0.1), "loss_fn must"),
        (lambda: nes(eps=-0.1), "eps"), (lambda: nes(queries=0), "queries"),
        (lambda: nes(num_queries=0), "num_queries"),
        (lambda: nes(mu=0.0), "mu"), (lambda: nes(alpha=0.0), "alpha"), (lambda: nes(loss="hinge"), "loss"),
        (lambda: nes(distribution="cube"), "distribution"), (lambda: nes(x=x + 1), r"\[0, 1\]"),
        (lambda: nes(y=y.int()), "int64"), (lambda: nes(y=y[:1]), "shape"),
        (lambda: sq(eps=-1.0), "eps"), (lambda: sq(queries=0), "queries"), (lambda: sq(p_init=0.0), "p_init"),
        (lambda: sq(p_init=1.5), "p_init"), (lambda: sq(x=x.flatten(1)), r"\(N, C, H, W\)"),
        (lambda: sq(x=x - 1), r"\[0, 1\]"), (lambda: sq(y=y.float()), "int64"),
        (lambda: blackbox.square_attack(lambda z: z.flatten(1)[:, :1], x, y, 0.1, queries=3), "scores"),
        (lambda: blackbox.QueryCounter(3), "model"),
        (lambda: blackbox.query_loss(model, y, loss="l2"), "loss"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_is_refused_by_name(case):
    call, name = _bad_calls()[case]
    with pytest.raises(ValueError, match=name):
        call()


# ---------------------------------------------------------------- argument policy, doctests


def _policy_cases():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2])
    f = lambda z: z.flatten(1).square().sum(1)  # noqa: E731

    def close(a, b):
        return all(torch.allclose(u, v, atol=1e-6) if isinstance(u, torch.Tensor) else u == v for u, v in zip(a, b))

    def zo(**kw):
        return blackbox.zo_gradient(f, x, **(dict(num_queries=4, mu=0.1, generator=torch.Generator().manual_seed(0))
                                             | kw))

    def nes(**kw):
        args = dict(eps=0.1, queries=30, generator=torch.Generator().manual_seed(0)) | kw
        return blackbox.nes_attack(model, x, y, args.pop("eps"), **args)

    def square(**kw):
        args = dict(eps=0.1, queries=30, generator=torch.Generator().manual_seed(0)) | kw
        return blackbox.square_attack(model, x, y, args.pop("eps"), **args)

    return [
        (lambda v: zo(num_queries=v), "num_queries", 4, close),
        (lambda v: zo(mu=v), "mu", 0.1, close),
        (lambda v: zo(chunk_size=v), "chunk_size", 5, close),
        (lambda v: nes(eps=v), "eps", 0.1, close),
        (lambda v: nes(queries=v), "queries", 30, close),
        (lambda v: nes(alpha=v), "alpha", 0.02, close),
        (lambda v: nes(num_queries=v), "num_queries", 6, close),
        (lambda v: nes(mu=v), "mu", 0.01, close),
        (lambda v: nes(chunk_size=v), "chunk_size", 5, close),
        (lambda v: square(eps=v), "eps", 0.1, close),
        (lambda v: square(queries=v), "queries", 30, close),
        (lambda v: square(p_init=v), "p_init", 0.3, close),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(blackbox).failed == 0


@pytest.mark.parametrize("loss", ["ce", "margin", "dlr"])
def test_query_loss_is_the_white_box_attack_loss(loss):
    # each loss the white-box attacks ascend, evaluated on stacked copies of the batch
    from course_lib.attack_base import _per_example_loss
    torch.manual_seed(1)
    model = models.mlp((1, 4, 4), 5, hidden=(8,))
    x, y = torch.rand(3, 1, 4, 4), torch.randint(0, 5, (3,))
    copies = torch.cat([x, x.flip(0)])  # rows j * N + n carry label y[n]
    got = blackbox.query_loss(model, y, loss=loss)(copies)
    with torch.no_grad():
        want = _per_example_loss(model(copies), y.repeat(2), loss)
    torch.testing.assert_close(got, want)
