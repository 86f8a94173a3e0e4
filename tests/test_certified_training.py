"""Certified training against poisoning (course_lib.certified_training): soundness above all.

Every bound is checked against actual runs: the unpoisoned run (k = 0, eps = 0: the box
collapses onto it), random poisonings, gradient-ascent poisonings through the unrolled training,
and every label flip of a tiny set, in float64. The per-example interval gradients are checked
against autograd at random points of their boxes, and sgd_train against a hand-written NumPy
softmax regression.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from course_lib import certified_training as ct
from course_lib import descent_bounds as db
from course_lib import interval_gradients as ig

pytestmark = pytest.mark.poisoning


def _data(seed: int, n: int = 12, d: int = 3, K: int = 2):
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=gen, dtype=torch.float64) * 2 - 1
    y = torch.randint(0, K, (n,), generator=gen)
    return X, y


def _model(kind: str, seed: int, d: int = 3, K: int = 2, hidden: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "linear":
        return nn.Linear(d, K).double()
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, K)).double()


def _inside(model: nn.Module, lower, upper) -> bool:
    return all(bool(((lo <= p) & (p <= hi)).all()) for p, lo, hi in zip(model.parameters(), lower, upper))


def _poisoned(X, y, idx, delta=None, labels=None):
    Xp, yp = X.clone(), y.clone()
    if delta is not None:
        Xp[idx] += delta
    if labels is not None:
        yp[idx] = labels
    return Xp, yp


def _batch_order(n, epochs, batch_size, seed):
    # the documented order, written out again: a seeded permutation per epoch, cut in batches
    gen = torch.Generator().manual_seed(seed)
    return [b for _ in range(epochs) for b in torch.randperm(n, generator=gen).split(batch_size)]


# ---------------------------------------------------------------------------
# The plain run and the interval gradients, against independent computations
# ---------------------------------------------------------------------------

def test_sgd_train_matches_numpy_softmax_regression():
    X, y = _data(0, n=10, K=3)
    model = _model("linear", 0, K=3)
    W, b = (p.detach().numpy().copy() for p in model.parameters())
    Xn, Y = X.numpy(), np.eye(3)[y.numpy()]
    for idx in _batch_order(10, 3, 4, 5):
        i = idx.numpy()
        z = Xn[i] @ W.T + b
        s = np.exp(z - z.max(1, keepdims=True))
        s /= s.sum(1, keepdims=True)
        delta = (s - Y[i]) / len(i)
        W, b = W - 0.3 * delta.T @ Xn[i], b - 0.3 * delta.sum(0)
    trained = ct.sgd_train(model, X, y, epochs=3, lr=0.3, batch_size=4, seed=5)
    np.testing.assert_allclose(trained.weight.detach().numpy(), W, atol=1e-12)
    np.testing.assert_allclose(trained.bias.detach().numpy(), b, atol=1e-12)
    assert trained is not model and not torch.equal(model.weight, trained.weight)  # a copy, input untouched


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("K", [2, 3])
def test_interval_gradients_contain_autograd_gradients(kind, K):
    gen = torch.Generator().manual_seed(K)
    model = _model(kind, K, K=K)
    centre = [p.detach().clone() * 3 for p in model.parameters()]  # large: saturated softmax too
    width = [torch.rand(p.shape, generator=gen, dtype=torch.float64) * 0.3 for p in centre]
    params = [(c - w, c + w) for c, w in zip(centre, width)]
    X, y = _data(K, n=6, K=K)
    eps = 0.2
    box = (X - eps, X + eps)
    for labels in (None, list(range(K))):
        bounds = ig.example_gradients(params, box, labels, y)
        for _ in range(40):
            theta = [c + w * (2 * torch.rand(c.shape, generator=gen, dtype=torch.float64) - 1)
                     for c, w in zip(centre, width)]
            x = X + eps * (2 * torch.rand(X.shape, generator=gen, dtype=torch.float64) - 1)
            lab = y if labels is None else torch.randint(0, K, y.shape, generator=gen)
            for i in range(len(y)):
                ps = [t.clone().requires_grad_(True) for t in theta]
                names = [n for n, _ in model.named_parameters()]
                out = functional_call(model, dict(zip(names, ps)), (x[i:i + 1],))
                grads = torch.autograd.grad(F.cross_entropy(out, lab[i:i + 1]), ps)
                for g, (lo, hi) in zip(grads, bounds):
                    assert (lo[i] <= g).all() and (g <= hi[i]).all()


def test_matmul_and_softmax_bounds_contain_sampled_values():
    gen = torch.Generator().manual_seed(1)
    Ac, Bc = torch.randn(5, 7, generator=gen, dtype=torch.float64), torch.randn(7, 3, generator=gen, dtype=torch.float64)
    A, B = (Ac - 0.1, Ac + 0.1), (Bc - 0.2, Bc + 0.2)
    lo, hi = ig.matmul(A, B)
    zl = torch.randn(4, 3, generator=gen, dtype=torch.float64) * 20
    sl, su = ig.softmax((zl, zl + 1))
    for _ in range(200):
        a = Ac + 0.1 * (2 * torch.rand(Ac.shape, generator=gen, dtype=torch.float64) - 1)
        b = Bc + 0.2 * (2 * torch.rand(Bc.shape, generator=gen, dtype=torch.float64) - 1)
        assert ((lo <= a @ b) & (a @ b <= hi)).all()
        s = torch.softmax(zl + torch.rand(zl.shape, generator=gen, dtype=torch.float64), -1)
        assert ((sl <= s) & (s <= su)).all()
    # a point matrix product: bounds within a few ulps of the float product
    p_lo, p_hi = ig.matmul((Ac, Ac), (Bc, Bc))
    assert (p_hi - p_lo).max() < 1e-13 and ((p_lo <= Ac @ Bc) & (Ac @ Bc <= p_hi)).all()


def test_top_k_sum_matches_sorting_with_ties():
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        n = int(torch.randint(1, 10, (1,), generator=gen))
        x = torch.randint(-3, 4, (n, 4), generator=gen).double()  # many ties
        for k in range(1, n + 1):
            ordered = x.sort(0, descending=True).values
            assert torch.equal(db.top_k_sum(x, k), ordered[:k].sum(0))
            assert torch.equal(db.top_k_sum(x, k, largest=False), ordered.flip(0)[:k].sum(0))


def test_rounding_is_covered_under_cancellation():
    from fractions import Fraction

    big = torch.tensor([[1e16, 1.0, -1e16, 3.0, -3.0]], dtype=torch.float64)  # float sums lose the 1
    ones = torch.ones(5, 1, dtype=torch.float64)
    exact = sum(Fraction(v) for v in big[0].tolist())
    assert exact == 1 and float(big @ ones) != 1.0
    lo, hi = ig.matmul((big, big), (ones, ones))
    assert Fraction(lo.item()) <= exact <= Fraction(hi.item())
    assert Fraction(ig.sum_lower(big[0]).item()) <= exact <= Fraction(ig.sum_upper(big[0]).item())
    # the fast path's clean sum: sum_i c_i x_i with c the big column, x = 1
    s_lo, s_hi = db._sum_outer((big.T, torch.zeros_like(big.T)), (ones, None))
    assert Fraction(s_lo.item()) <= exact <= Fraction(s_hi.item())


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("K, eps, flip", [(2, 0.1, False), (2, 0.0, True), (3, 0.1, True)])
def test_descent_bounds_contain_poisoned_mean_gradients(kind, K, eps, flip):
    gen = torch.Generator().manual_seed(K + 10 * flip)
    model = _model(kind, K, K=K)
    centre = [p.detach().clone() for p in model.parameters()]
    width = [torch.rand(p.shape, generator=gen, dtype=torch.float64) * 0.05 for p in centre]
    params = [(c - w, c + w) for c, w in zip(centre, width)]
    X, y = _data(K, n=8, K=K)
    k = 2
    kw = dict(k=k, eps=eps, label_flip=flip, num_classes=K)
    fast, ref = db.descent_bounds(params, X, y, **kw), db.reference_descent_bounds(params, X, y, **kw)
    names = [n for n, _ in model.named_parameters()]
    for _ in range(60):
        theta = [(c + w * (2 * torch.rand(c.shape, generator=gen, dtype=torch.float64) - 1)).requires_grad_(True)
                 for c, w in zip(centre, width)]
        idx = torch.randperm(8, generator=gen)[:int(torch.randint(0, k + 1, (1,), generator=gen))]
        delta = eps * torch.sign(torch.randn(len(idx), X.shape[1], generator=gen, dtype=torch.float64))
        labels = torch.randint(0, K, (len(idx),), generator=gen) if flip else None
        Xp, yp = _poisoned(X, y, idx, delta, labels)
        grads = torch.autograd.grad(F.cross_entropy(functional_call(model, dict(zip(names, theta)), (Xp,)), yp), theta)
        for g, (f_lo, f_hi), (r_lo, r_hi) in zip(grads, fast, ref):
            assert ((f_lo <= g) & (g <= f_hi)).all() and ((r_lo <= g) & (g <= r_hi)).all()
    # the fast path is a little looser (Rump's product bound; the label hull taken at the output)
    for (f_lo, f_hi), (r_lo, r_hi) in zip(fast, ref):
        assert ((f_hi - f_lo) <= 2 * (r_hi - r_lo) + 1e-12).all()


# ---------------------------------------------------------------------------
# (1) No budget: the box collapses onto the plain run
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("batch_size", [12, 5])
def test_no_budget_collapses_to_the_plain_run(kind, batch_size):
    X, y = _data(1)
    model = _model(kind, 1)
    kw = dict(epochs=4, lr=0.5, batch_size=batch_size, seed=3)
    trained = ct.sgd_train(model, X, y, **kw)
    for k, eps, flip in [(0, 0.0, False), (0, 0.3, True), (2, 0.0, False)]:  # nothing can be poisoned
        lower, upper = ct.agt_train(model, X, y, k=k, eps=eps, label_flip=flip, **kw)
        assert [t.dtype for t in lower] == [torch.float64] * len(lower)
        for p, lo, hi in zip(trained.parameters(), lower, upper):
            assert lo.shape == p.shape and (hi - lo).max() < 1e-10
        assert _inside(trained, lower, upper)
    lower, upper = ct.agt_train(model, X, y, k=0, eps=0.0, epochs=0, lr=0.5, batch_size=batch_size)
    assert all(torch.equal(lo, p) and torch.equal(hi, p) for p, lo, hi in zip(model.parameters(), lower, upper))


# ---------------------------------------------------------------------------
# (2)-(3) Sampled, adversarial and exhaustive poisonings all end inside the box
# ---------------------------------------------------------------------------

CONFIGS = [  # kind, k, eps, label_flip, batch_size
    ("linear", 2, 0.1, False, 12), ("linear", 1, 0.0, True, 12), ("linear", 1, 0.05, True, 4),
    ("mlp", 2, 0.1, False, 12), ("mlp", 1, 0.0, True, 12), ("mlp", 1, 0.05, True, 4),
]


@pytest.mark.parametrize("kind, k, eps, flip, batch_size", CONFIGS)
def test_random_poisonings_end_inside_the_box(kind, k, eps, flip, batch_size):
    X, y = _data(2)
    model = _model(kind, 2)
    kw = dict(epochs=3, lr=0.3, batch_size=batch_size, seed=1)
    lower, upper = ct.agt_train(model, X, y, k=k, eps=eps, label_flip=flip, **kw)
    gen = torch.Generator().manual_seed(7)
    for trial in range(25):
        # k poisoned examples of the set: at most k in any batch
        idx = torch.randperm(len(y), generator=gen)[:k]
        delta = eps * (2 * torch.rand(k, X.shape[1], generator=gen, dtype=torch.float64) - 1)
        if trial % 2:
            delta = eps * delta.sign()  # corners of the eps-box
        labels = torch.randint(0, 2, (k,), generator=gen) if flip else None
        assert _inside(ct.sgd_train(model, *_poisoned(X, y, idx, delta, labels), **kw), lower, upper)


def _unrolled(model, X, y, epochs, lr, batch_size, seed):
    """The final parameters of sgd_train as a differentiable function of X."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    for idx in _batch_order(len(y), epochs, batch_size, seed):
        loss = F.cross_entropy(functional_call(model, dict(zip(names, params)), (X[idx],)), y[idx])
        grads = torch.autograd.grad(loss, params, create_graph=True)
        params = [p - lr * g for p, g in zip(params, grads)]
    return params


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_gradient_ascent_poisons_stay_inside_the_box(kind):
    X, y = _data(3, n=10)
    model = _model(kind, 3)
    k, eps = 2, 0.15
    kw = dict(epochs=3, lr=0.5, batch_size=10, seed=0)
    lower, upper = ct.agt_train(model, X, y, k=k, eps=eps, **kw)
    idx = torch.tensor([0, 1])
    n_params = sum(p.numel() for p in model.parameters())
    for j in range(0, n_params, 2 if kind == "mlp" else 1):
        for sign in (1.0, -1.0):
            delta = torch.zeros(k, X.shape[1], dtype=torch.float64, requires_grad=True)
            for _ in range(10):  # signed-gradient ascent on +-theta_j, projected to the eps-box
                final = torch.cat([p.flatten() for p in _unrolled(model, *_poisoned(X, y, idx, delta), **kw)])
                (g,) = torch.autograd.grad(sign * final[j], delta)
                delta = (delta + eps / 4 * g.sign()).clamp(-eps, eps).detach().requires_grad_(True)
            trained = ct.sgd_train(model, *_poisoned(X, y, idx, delta.detach()), **kw)
            assert _inside(trained, lower, upper)


def test_gradient_ascent_reaches_part_of_the_one_step_box():
    # one step of logistic regression: the box is nearly tight, so a working attack gets close
    # (about 60% of the excursion for weights, 30% for biases, over all pairs of poisons)
    X, y = _data(3, n=10)
    model = _model("linear", 3)
    k, eps = 2, 0.15
    kw = dict(epochs=1, lr=0.5, batch_size=10, seed=0)
    lower, upper = ct.agt_train(model, X, y, k=k, eps=eps, **kw)
    lo, hi = torch.cat([t.flatten() for t in lower]), torch.cat([t.flatten() for t in upper])
    nominal = torch.cat([p.flatten() for p in ct.sgd_train(model, X, y, **kw).parameters()]).detach()
    for j in range(len(nominal)):
        for sign in (1.0, -1.0):
            best = 0.0
            for idx in (torch.tensor([0, 1]), torch.tensor([2, 5]), torch.tensor([7, 9])):
                delta = torch.zeros(k, 3, dtype=torch.float64, requires_grad=True)
                for _ in range(4):
                    final = torch.cat([p.flatten() for p in _unrolled(model, *_poisoned(X, y, idx, delta), **kw)])
                    (g,) = torch.autograd.grad(sign * final[j], delta)
                    delta = (delta + eps / 2 * g.sign()).clamp(-eps, eps).detach().requires_grad_(True)
                trained = ct.sgd_train(model, *_poisoned(X, y, idx, delta.detach()), **kw)
                assert _inside(trained, lower, upper)
                value = torch.cat([p.flatten() for p in trained.parameters()])[j]
                best = max(best, (sign * (value - nominal[j]) / (hi[j] - nominal[j] if sign > 0 else nominal[j] - lo[j])).item())
            assert 0.15 < best <= 1


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("K, batch_size", [(2, 8), (3, 4)])
def test_every_label_flip_of_a_tiny_set_stays_inside_the_box(kind, K, batch_size):
    X, y = _data(4, n=8, K=K)
    model = _model(kind, 4, K=K)
    k = 2 if K == 2 else 1
    kw = dict(epochs=2, lr=0.5, batch_size=batch_size, seed=2)
    lower, upper = ct.agt_train(model, X, y, k=k, eps=0.0, label_flip=True, **kw)
    runs = 0
    for size in range(k + 1):
        for idx in itertools.combinations(range(len(y)), size):
            for labels in itertools.product(range(K), repeat=size):
                trained = ct.sgd_train(model, *_poisoned(X, y, list(idx), labels=torch.tensor(labels, dtype=torch.int64)), **kw)
                assert _inside(trained, lower, upper)
                runs += 1
    assert runs == sum(len(list(itertools.combinations(range(8), s))) * K ** s for s in range(k + 1))


# ---------------------------------------------------------------------------
# (4) Certified predictions are never contradicted
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_certified_predictions_never_contradicted(kind):
    # settings where the model learns the rule and some test points are certified
    n, lr, epochs, flip = (20, 0.5, 4, True) if kind == "linear" else (40, 2.0, 3, False)
    X, y = _data(5, n=n)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()  # a learnable rule: predictions worth certifying
    model = _model(kind, 5)
    X_test = torch.rand(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    k, eps = 1, 0.05
    kw = dict(epochs=epochs, lr=lr, batch_size=n, seed=0)
    lower, upper = ct.agt_train(model, X, y, k=k, eps=eps, label_flip=flip, **kw)
    certified = ct.certified_predictions(model, lower, upper, X_test)
    z_lo, z_hi = ct.logit_bounds(model, lower, upper, X_test)
    assert certified.dtype == torch.int64 and (certified != ct.ABSTAIN).sum() >= 20  # not vacuous
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        idx = torch.randperm(len(y), generator=gen)[:k]
        delta = eps * torch.sign(torch.randn(k, 3, generator=gen, dtype=torch.float64))
        trained = ct.sgd_train(model, *_poisoned(X, y, idx, delta, 1 - y[idx] if flip else None), **kw)
        with torch.no_grad():
            logits = trained(X_test)
        assert ((z_lo <= logits) & (logits <= z_hi)).all()
        sure = certified != ct.ABSTAIN
        assert torch.equal(logits.argmax(1)[sure], certified[sure])
    acc = ct.certified_accuracy(model, lower, upper, X_test, (X_test[:, 0] + 0.5 * X_test[:, 1] > 0).long())
    assert 0 < acc <= (certified != ct.ABSTAIN).double().mean().item()


# ---------------------------------------------------------------------------
# (5) Monotone in the budget
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_bounds_grow_with_k_eps_and_label_flips(kind):
    X, y = _data(6)
    model = _model(kind, 6)
    kw = dict(epochs=2, lr=0.3, batch_size=6, seed=0)

    def nested(inner, outer):
        return all(bool((lo_o <= lo_i).all() and (hi_i <= hi_o).all())
                   for lo_i, hi_i, lo_o, hi_o in zip(*inner, *outer))

    boxes = [ct.agt_train(model, X, y, k=k, eps=0.05, **kw) for k in range(4)]
    boxes += [ct.agt_train(model, X, y, k=3, eps=0.05, label_flip=True, **kw)]
    assert all(nested(a, b) for a, b in zip(boxes, boxes[1:]))
    boxes = [ct.agt_train(model, X, y, k=2, eps=eps, **kw) for eps in (0.0, 0.01, 0.05, 0.2)]
    assert all(nested(a, b) for a, b in zip(boxes, boxes[1:]))
    width = [sum((hi - lo).sum().item() for lo, hi in zip(*b)) for b in boxes]
    assert width[-1] > width[1] > width[0]


# ---------------------------------------------------------------------------
# (6) Bad input
# ---------------------------------------------------------------------------

def test_bad_input_is_refused_naming_the_argument():
    X, y = _data(0, n=8)
    model = _model("linear", 0)
    kw = dict(k=1, eps=0.1, epochs=1, lr=0.1, batch_size=4)
    cases = [({"k": -1}, "k"), ({"k": 5}, "k"), ({"eps": -0.1}, "eps"), ({"batch_size": 9}, "batch_size"),
             ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"), ({"epochs": -1}, "epochs"),
             ({"label_flip": 1}, "label_flip"), ({"seed": -1}, "seed")]
    for change, name in cases:
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            ct.agt_train(model, X, y, **(kw | change))
    for args, name in [((X[:, :2], y), "X"), ((X, y[:5]), "y"), ((X, y.double()), "y"), ((X, y + 2), "y"),
                       ((X[:0], y[:0]), "X")]:
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            ct.agt_train(model, *args, **kw)
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            ct.sgd_train(model, *args, epochs=1, lr=0.1, batch_size=4)
    for bad in (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), nn.Linear(3, 2, bias=False),
                nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)),
                nn.Linear(3, 1)):
        with pytest.raises(ValueError, match="model"):
            ct.agt_train(bad.double(), X, y, **kw)
    lower, upper = ct.agt_train(model, X, y, **kw)
    with pytest.raises(ValueError, match="param_lower"):
        ct.certified_predictions(model, lower[:1], upper, X)
    with pytest.raises(ValueError, match="param_lower"):
        ct.certified_predictions(model, upper, lower, X)
    with pytest.raises(ValueError, match=r"\bX\b"):
        ct.certified_predictions(model, lower, upper, X[:, :2])


def _same_boxes(a, b):
    return all(torch.equal(s, t) for s, t in zip(a[0] + a[1], b[0] + b[1]))


def _same_models(a, b):
    return all(torch.equal(s, t) for s, t in zip(a.parameters(), b.parameters()))


def _policy_cases():
    X, y = _data(0, n=8)
    model = _model("linear", 0)
    agt = dict(k=1, eps=0.125, epochs=1, lr=0.25, batch_size=4)
    sgd = dict(epochs=1, lr=0.25, batch_size=4)
    cases = [(lambda v, n=name: ct.agt_train(model, X, y, **(agt | {n: v})), name, value, _same_boxes)
             for name, value in agt.items()]
    cases += [(lambda v, n=name: ct.sgd_train(model, X, y, **(sgd | {n: v})), name, value, _same_models)
              for name, value in sgd.items()]
    box = [(p.detach().clone(),) * 2 for p in model.parameters()]
    step = dict(k=1, eps=0.125, label_flip=True, num_classes=2)

    def same_intervals(a, b):
        return all(torch.equal(s, t) for u, v in zip(a, b) for s, t in zip(u, v))

    for fn in (db.descent_bounds, db.reference_descent_bounds):
        cases += [(lambda v, n=name, f=fn: f(box, X, y, **(step | {n: v})), name, value, same_intervals)
                  for name, value in step.items() if name != "label_flip"]
    cases += [(lambda v, n=name: ct.agt_step(box, X, y, **(step | {"lr": 0.25} | {n: v})), name, value,
               same_intervals) for name, value in (step | {"lr": 0.25}).items() if name != "label_flip"]
    return cases


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)
