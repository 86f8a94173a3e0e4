"""APGD, the DLR loss and the worst-case robust accuracy (course_lib.apgd, attack_base, robust_evaluation)."""

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import apgd as apgd_module
from course_lib import attacks, models, train
from course_lib.data import load_dataset
from strategies import image_batch, small_model

pytestmark = pytest.mark.attacks

TOL = 1e-6  # float32 rounding of (x + delta) - x


_random_model = small_model
_batch = image_batch


def _distance(x, x_adv, norm):
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)


# ---------------------------------------------------------------- APGD: the contract


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_stays_in_ball_and_box_and_keeps_the_contract(seed, norm):
    model = _random_model(seed, "cnn" if seed % 2 else "mlp")
    model.train(seed % 3 == 0)
    mode = model.training
    x, y = _batch(seed)
    x_before = x.clone()
    eps = [0.0, 0.03, 0.3, 1.0, 3.0][seed % 5]
    loss = ["ce", "dlr", "margin"][seed % 3]
    x_adv = attacks.apgd(model, x, y, eps, 1 + seed % 12, loss=loss, norm=norm,
                         generator=torch.Generator().manual_seed(seed))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (_distance(x, x_adv, norm) <= eps * (1 + 1e-6) + TOL).all()
    assert torch.equal(x, x_before)  # x is never modified in place
    assert model.training == mode  # the mode is left as it is
    assert all(p.grad is None for p in model.parameters())


def test_apgd_keeps_float64_and_runs_under_no_grad():
    model = _random_model(0, "mlp").double()
    x, y = _batch(0)
    x = x.double()
    with torch.no_grad():
        x_adv = attacks.apgd(model, x, y, 0.1, 5)
    assert x_adv.dtype == torch.float64 and (x_adv - x).abs().max() <= 0.1 + 1e-12


def test_apgd_is_deterministic_given_the_generator():
    model = _random_model(1, "cnn")
    x, y = _batch(1)
    runs = [attacks.apgd(model, x, y, 0.2, 15, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


# ---------------------------------------------------------------- checkpoints and the step size


def _checkpoints_closed_form(n: int) -> list[int]:
    """The paper's formula in exact rational arithmetic."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] * n <= n:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return sorted({math.ceil(q * n) for q in p if math.ceil(q * n) <= n})


def test_checkpoints_match_the_papers_formula():
    assert apgd_module.checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    for n in range(1, 400):
        assert apgd_module.checkpoints(n) == _checkpoints_closed_form(n), n


def _reference_apgd(model, x, y, eps, steps, x0):
    """Algorithm 1 of Croce and Hein (2020), L-inf, CE, one example at a time in plain Python
    (only the forward/backward pass is batched, so that losses agree to the bit)."""
    n = len(x)
    w = _checkpoints_closed_form(steps)
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)

    def f_and_grad(points):
        points = torch.stack(points).requires_grad_(True)
        losses = F.cross_entropy(model(points), y, reduction="none")
        (g,) = torch.autograd.grad(losses.sum(), points)
        return losses.detach().tolist(), list(g)

    cur = list(x0)
    fs, grads = f_and_grad(cur)
    prev = list(cur)
    best, f_best, g_best = list(cur), list(fs), list(grads)
    eta = [2 * eps] * n
    history = [[f] for f in fs]  # f(x^(k)) per example, for condition 1
    reduced_last, f_best_last = [True] * n, list(f_best)
    etas = []
    trajectory = [torch.stack(cur)]
    for k in range(1, steps + 1):
        a = 1.0 if k == 1 else 0.75
        new = []
        for i in range(n):
            z = (cur[i] + eta[i] * grads[i].sign()).clamp(lo[i], hi[i])
            new.append(z if k == 1 else ((z - cur[i]) * a + cur[i] + (cur[i] - prev[i]) * (1 - a)).clamp(lo[i], hi[i]))
        prev, cur = cur, new
        fs, grads = f_and_grad(cur)
        trajectory.append(torch.stack(cur))
        for i in range(n):
            history[i].append(fs[i])
            if fs[i] > f_best[i]:
                best[i], f_best[i], g_best[i] = cur[i], fs[i], grads[i]
        if k in w[1:]:
            j = w.index(k)
            for i in range(n):
                window = history[i][w[j - 1]:k + 1]
                raised = sum(b > a_ for a_, b in zip(window, window[1:]))
                cond1 = raised < 0.75 * (k - w[j - 1])
                cond2 = not reduced_last[i] and f_best[i] <= f_best_last[i]
                if cond1 or cond2:
                    eta[i] /= 2
                    cur[i], grads[i] = best[i], g_best[i]
                    history[i][-1] = f_best[i]
                reduced_last[i], f_best_last[i] = cond1 or cond2, f_best[i]
            etas.append(list(eta))
    return trajectory, torch.stack(best), etas


class _Sine(nn.Module):
    def forward(self, x):
        return torch.sin(8 * x)


class _Recorder(nn.Module):
    """Wraps a model and records every input batch it sees."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


def test_apgd_follows_algorithm_1_step_for_step():
    torch.manual_seed(3)
    # a wavy loss (sines), so that iterates oscillate and the step size halves at different times
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 12), _Sine(), nn.Linear(12, 3)).double()
    x = torch.rand(16, 1, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(4))
    eps, steps = 0.4, 60
    recorder = _Recorder(net)
    x_adv = attacks.apgd(recorder, x, y, eps, steps, generator=torch.Generator().manual_seed(0))
    assert len(recorder.seen) == steps + 1  # one forward (and backward) per iteration, one at the start
    trajectory, best, etas = _reference_apgd(net, x, y, eps, steps, recorder.seen[0])
    for k, (ours, ref) in enumerate(zip(recorder.seen, trajectory)):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12, msg=f"iterate {k}")
    wrong = net(x_adv).argmax(1) != y
    ref_wrong = net(best).argmax(1) != y
    assert (wrong >= ref_wrong).all()  # a misclassified best point is never lost
    # the case is not vacuous: step sizes halved, at different checkpoints for different examples
    final = torch.tensor(etas[-1])
    assert (final < 2 * eps).any() and len(set(final.tolist())) > 1


# ---------------------------------------------------------------- the DLR loss


def _dlr_direct(z: list[float], label: int) -> float:
    ranked = sorted(z, reverse=True)
    best_other = max(v for j, v in enumerate(z) if j != label)
    return -(z[label] - best_other) / (ranked[0] - ranked[2] + 1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_dlr_matches_a_direct_computation_and_its_invariances(seed):
    gen = torch.Generator().manual_seed(seed)
    k = 3 + seed % 5
    z = torch.randn(20, k, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, k, (20,), generator=gen)
    dlr = attacks.dlr_loss(z, y)
    expected = torch.tensor([_dlr_direct(row, int(label)) for row, label in zip(z.tolist(), y.tolist())],
                            dtype=torch.float64)
    torch.testing.assert_close(dlr, expected)
    for c in (0.01, 0.5, 7.0, 300.0):
        torch.testing.assert_close(attacks.dlr_loss(c * z, y), dlr, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(attacks.dlr_loss(z + 123.4, y), dlr, rtol=1e-6, atol=1e-8)
    assert torch.equal(dlr > 0, z.argmax(1) != y)  # > 0 exactly when misclassified


def test_dlr_needs_three_classes_and_works_in_fgsm_and_pgd():
    model2 = _random_model(0, "mlp", classes=2)
    x, y = _batch(0, classes=2)
    with pytest.raises(ValueError, match="K >= 3"):
        attacks.pgd(model2, x, y, 0.1, 0.02, 3, loss="dlr")
    with pytest.raises(ValueError, match="K >= 3"):
        attacks.apgd(model2, x, y, 0.1, 3, loss="dlr")
    model = _random_model(0, "mlp")
    x, y = _batch(0)
    for x_adv in (attacks.fgsm(model, x, y, 0.1, loss="dlr"),
                  attacks.pgd(model, x, y, 0.1, 0.02, 5, loss="dlr")):
        assert (x_adv - x).abs().max() <= 0.1 + TOL and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():  # a gradient step on DLR raises it (small steps, first order)
        before = attacks.dlr_loss(model(x), y)
        after = attacks.dlr_loss(model(attacks.fgsm(model, x, y, 1e-3, loss="dlr")), y)
    assert (after >= before - 1e-6).float().mean() >= 0.9


# ---------------------------------------------------------------- APGD against PGD on a trained model


@pytest.fixture(scope="module")
def trained_digits():
    # a module fixture is built before the autouse one that sets one thread: set it here too
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = models.mlp(data.input_shape, 10, hidden=(64,))
    train.train(model, data.loaders(64)[0], epochs=8, lr=1e-2, progress=False)
    torch.set_num_threads(threads)
    return model.eval(), data.test.tensors


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_steps(trained_digits, loss):
    # On this small ReLU network both attacks mostly end at the same vertex of the box; where they
    # part, they found different local maxima, and APGD's is higher on most of them. Measured
    # (eps 0.1, 20 steps, PGD step 2.5 eps / steps): APGD >= PGD per example on 90.5% (CE) and
    # 89% (DLR) of the 359 digits, a higher mean loss, and 208 vs 204 (CE), 194 vs 190 (DLR) broken.
    model, (x, y) = trained_digits
    eps, steps = 0.1, 20
    gen = torch.Generator().manual_seed(0)
    x_pgd = attacks.pgd(model, x, y, eps, 2.5 * eps / steps, steps, loss=loss, generator=gen)
    x_apgd = attacks.apgd(model, x, y, eps, steps, loss=loss, generator=gen)
    with torch.no_grad():
        z_pgd, z_apgd = model(x_pgd), model(x_apgd)
    per_example = {"ce": lambda z: F.cross_entropy(z, y, reduction="none"), "dlr": lambda z: attacks.dlr_loss(z, y)}
    loss_pgd, loss_apgd = per_example[loss](z_pgd), per_example[loss](z_apgd)
    assert (loss_apgd >= loss_pgd - 1e-6).float().mean() >= 0.8
    assert loss_apgd.mean() >= loss_pgd.mean()
    broken_pgd = int((z_pgd.argmax(1) != y).sum())
    broken_apgd = int((z_apgd.argmax(1) != y).sum())
    assert broken_apgd >= broken_pgd - 0.01 * len(y) and broken_apgd > 0.3 * len(y)


# ---------------------------------------------------------------- robust accuracy: the worst case


def _one_at_a_time(attack):
    """The attack run on each example alone, so its result does not depend on the batch around it."""
    return lambda m, x, y, eps: torch.cat([attack(m, x[i:i + 1], y[i:i + 1], eps) for i in range(len(x))])


def test_robust_accuracy_is_the_per_example_worst_case(trained_digits):
    model, (x, y) = trained_digits
    x, y = x[:96], y[:96]
    eps = 0.1
    ensemble = {  # weakest first, so that each one is left examples to break
        "fgsm/4": _one_at_a_time(lambda m, x, y, e: attacks.fgsm(m, x, y, e / 4)),
        "fgsm": _one_at_a_time(attacks.fgsm),
        "pgd-dlr": _one_at_a_time(lambda m, x, y, e: attacks.pgd(m, x, y, e, e / 4, 20, random_start=False,
                                                                 loss="dlr")),
        "pgd-ce": _one_at_a_time(lambda m, x, y, e: attacks.pgd(m, x, y, e, e / 4, 20, random_start=False)),
    }
    result = attacks.robust_accuracy(model, [(x[:40], y[:40]), (x[40:], y[40:])], eps, ensemble)
    # brute force: every attack on every example, then the AND
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        survives = {name: model(attack(model, x, y, eps)).argmax(1) == y for name, attack in ensemble.items()}
    robust = clean & survives["fgsm/4"] & survives["fgsm"] & survives["pgd-dlr"] & survives["pgd-ce"]
    assert result.robust_accuracy == robust.sum().item() / len(y)
    assert result.clean_accuracy == clean.sum().item() / len(y)
    expected = torch.full((len(y),), attacks.ROBUST)
    expected[~clean] = attacks.MISCLASSIFIED
    for i, name in reversed(list(enumerate(ensemble))):  # the first attack that broke it wins
        expected[clean & ~survives[name]] = i
    assert torch.equal(result.broken_by, expected)
    assert result.attack_names == ("fgsm/4", "fgsm", "pgd-dlr", "pgd-ce")
    assert result.counts == {name: int((expected == i).sum()) for i, name in enumerate(ensemble)}
    assert all(n > 0 for n in result.counts.values())  # every attack is credited with some
    assert result.robust_accuracy < result.clean_accuracy
    assert result.labels()[:5] == [{-1: "robust", -2: "misclassified"}.get(c, result.attack_names[c])
                                   for c in expected[:5].tolist()]


def test_robust_accuracy_runs_later_attacks_only_on_survivors_and_takes_pairs():
    model = _random_model(0, "mlp")
    x, y = _batch(0, n=30)
    sizes = []

    def spy(m, x, y, eps):
        sizes.append(len(x))
        return x.clone()

    result = attacks.robust_accuracy(model, (x, y), 0.3, [("fgsm", attacks.fgsm), ("spy", spy)])
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        fooled = model(attacks.fgsm(model, x, y, 0.3)).argmax(1) != y
    assert sizes == [int((clean & ~fooled).sum())]
    assert result.counts == {"fgsm": int((clean & fooled).sum()), "spy": 0}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_robust_accuracy_refuses_attacks_leaving_the_ball_or_the_box(norm):
    model = _random_model(0, "mlp")
    x, y = _batch(0)
    x = x.clamp(0.2, 0.8)
    too_far = {"too far": lambda m, x, y, eps: (x + 2 * eps).clamp(0, 1)}
    with pytest.raises(ValueError, match="too far.*ball"):
        attacks.robust_accuracy(model, (x, y), 0.1, too_far, norm=norm)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.robust_accuracy(model, (x, y), 5.0, {"box": lambda m, x, y, eps: x + 0.5}, norm=norm)
    with pytest.raises(ValueError, match="shape"):
        attacks.robust_accuracy(model, (x, y), 0.1, {"shape": lambda m, x, y, eps: x[:1]}, norm=norm)
    ok = {"apgd": lambda m, x, y, eps: attacks.apgd(m, x, y, eps, 5, norm=norm)}
    assert 0 <= attacks.robust_accuracy(model, (x, y), 0.1, ok, norm=norm).robust_accuracy <= 1


def test_bad_arguments_are_refused():
    model = _random_model(0, "mlp")
    x, y = _batch(0)
    with pytest.raises(ValueError, match="eps"):
        attacks.apgd(model, x, y, -0.1, 5)
    with pytest.raises(ValueError, match="steps"):
        attacks.apgd(model, x, y, 0.1, 0)
    with pytest.raises(ValueError, match="loss"):
        attacks.apgd(model, x, y, 0.1, 5, loss="hinge")
    with pytest.raises(ValueError, match="loss"):
        attacks.pgd(model, x, y, 0.1, 0.02, 5, loss="hinge")
    with pytest.raises(ValueError, match="norm"):
        attacks.apgd(model, x, y, 0.1, 5, norm="l1")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.apgd(model, x * 2 + 0.1, y, 0.1, 5)
    with pytest.raises(ValueError, match="int64"):
        attacks.apgd(model, x, y.int(), 0.1, 5)
    with pytest.raises(ValueError, match="eps"):
        attacks.robust_accuracy(model, (x, y), -1.0, {"fgsm": attacks.fgsm})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.robust_accuracy(model, (x + 1, y), 0.1, {"fgsm": attacks.fgsm})
    with pytest.raises(ValueError, match="at least one"):
        attacks.robust_accuracy(model, (x, y), 0.1, {})
    with pytest.raises(ValueError, match="distinct"):
        attacks.robust_accuracy(model, (x, y), 0.1, [("a", attacks.fgsm), ("a", attacks.fgsm)])
    with pytest.raises(ValueError, match="no examples"):
        attacks.robust_accuracy(model, (x[:0], y[:0]), 0.1, {"fgsm": attacks.fgsm})


# ---------------------------------------------------------------- argument policy


def _policy_cases():
    model = _random_model(0, "mlp")
    x, y = torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 2, 3])
    eq = torch.equal

    def apgd(**kw):
        args = dict(eps=0.1, steps=3) | kw
        return attacks.apgd(model, x, y, **args, generator=torch.Generator().manual_seed(0))

    def robust(eps):
        return attacks.robust_accuracy(model, (x, y), eps, {"fgsm": attacks.fgsm}).robust_accuracy

    return [
        (lambda v: apgd(eps=v), "eps", 0.1, lambda a, b: torch.allclose(a, b, atol=1e-6)),
        (lambda v: apgd(steps=v), "steps", 3, eq),
        (lambda v: apgd_module.checkpoints(v), "steps", 100, list.__eq__),
        (robust, "eps", 0.1, float.__eq__),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    for module in (apgd_module, attacks):
        assert doctest.testmod(module).failed == 0
