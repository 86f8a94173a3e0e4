"""course_lib.certified_losses: IBP and CROWN-IBP training's batch losses.

The CROWN-IBP loss against a by-hand computation (an explicit margin matrix C, crown_bounds,
the IBP box of the penultimate layer with the last layer folded by hand, torch's cross-entropy
on the negated margins) at several points of its schedule; its endpoints (pure CROWN-IBP, pure
IBP = IBPLoss); the robust cross-entropy above the cross-entropy at PGD and sampled points of the
ball; the schedules; a few training steps; the argument policy; the docstring examples. IBPLoss's
behaviour is tested where the lecture uses it, tests/test_ibp_training.py.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import course_lib as cl
from course_lib import certified_losses as ct
from course_lib import crown, ibp, specification, train

pytestmark = pytest.mark.train

NAMES = ["CROWNIBPLoss", "IBPLoss", "crown_ibp_loss", "ibp_loss"]


@pytest.mark.parametrize("name", NAMES)
def test_train_reexports_the_certified_losses(name):
    assert getattr(train, name) is getattr(ct, name)
    assert name in train.__all__


def _net(seed=0, sizes=(3, 6, 5, 4)):
    """Two hidden ReLU layers (CROWN-IBP and IBP differ), float64, inputs (N, 3), 4 classes."""
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers).double()


def _batch(seed=0, n=6, d=3, k=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    x[0] = torch.tensor([0.0, 1.0, 0.02], dtype=torch.float64)  # at the box's edge: clipping matters
    return x, torch.randint(0, k, (n,), generator=g)


def _spec_by_hand(y, k):
    C = torch.zeros(len(y), k - 1, k, dtype=torch.float64)
    for i, yi in enumerate(y.tolist()):
        for row, j in enumerate(j for j in range(k) if j != yi):
            C[i, row, yi], C[i, row, j] = 1.0, -1.0
    return C


def _margins_by_hand(model, x, y, eps, beta):
    """(N, K-1) mixed margins and the class of each column: CROWN-IBP from crown_bounds with an
    explicit C, IBP from the penultimate box with the last layer folded by hand."""
    k = model[-1].out_features
    C = _spec_by_hand(y, k)
    m_crown = crown.crown_bounds(model, x, eps, C=C, method="crown-ibp")[0]
    lo, hi = ibp.ibp_bounds(model[:-1], x, eps)  # the box of the penultimate activations
    mu, r = (lo + hi) / 2, (hi - lo) / 2
    CW = C @ model[-1].weight  # (N, K-1, H): w_y - w_j
    m_ibp = (CW @ mu[:, :, None] - CW.abs() @ r[:, :, None]).squeeze(-1) + C @ model[-1].bias
    others = torch.tensor([[j for j in range(k) if j != yi] for yi in y.tolist()])
    return beta * m_crown + (1 - beta) * m_ibp, others


def _worst_logits(m, others, k):
    worst = torch.zeros(m.shape[0], k, dtype=m.dtype)
    for i in range(m.shape[0]):
        worst[i, others[i]] = -m[i]
    return worst


def test_loss_equals_the_by_hand_computation_along_the_schedule():
    model, (x, y) = _net(0), _batch(0)
    eps, ramp = 0.15, 4
    loss_fn = ct.crown_ibp_loss(eps, ramp_batches=ramp, kappa=(0.9, 0.2), beta=(1.0, 0.0))
    for t in range(6):
        p = min(1.0, t / ramp)  # the formula: eps, kappa and beta move together
        eps_t, kappa_t, beta_t = eps * p, 0.9 + (0.2 - 0.9) * p, 1.0 + (0.0 - 1.0) * p
        loss, logits = loss_fn(model, x, y)
        with torch.no_grad():
            m, others = _margins_by_hand(model, x, y, eps_t, beta_t)
            robust = F.cross_entropy(_worst_logits(m, others, 4), y)
            expected = kappa_t * F.cross_entropy(model(x), y) + (1 - kappa_t) * robust
        torch.testing.assert_close(loss.detach(), expected, msg=f"batch {t}")
        torch.testing.assert_close(logits.detach(), model(x).detach())
        assert loss_fn.eps_history[-1] == pytest.approx(eps_t)
        assert loss_fn.kappa_history[-1] == pytest.approx(kappa_t)
        assert loss_fn.beta_history[-1] == pytest.approx(beta_t)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_margins_equal_the_by_hand_mixture(beta):
    model, (x, y) = _net(1), _batch(1)
    with torch.no_grad():
        got = ct.crown_ibp_margins(model, x, y, 0.2, beta=beta)
        m, others = _margins_by_hand(model, x, y, 0.2, beta)
    torch.testing.assert_close(got.gather(1, others), m)
    assert torch.isinf(got.gather(1, y[:, None])).all()


def test_endpoints_are_pure_crown_ibp_and_pure_ibp(monkeypatch):
    model, (x, y) = _net(2), _batch(2)
    eps = 0.2
    with torch.no_grad():
        pure_crown, _ = ct.crown_ibp_loss(eps, kappa=0.0, beta=1.0)(model, x, y)
        m = crown.crown_bounds(model, x, eps, C=_spec_by_hand(y, 4), method="crown-ibp")[0]
        others = torch.tensor([[j for j in range(4) if j != yi] for yi in y.tolist()])
        torch.testing.assert_close(pure_crown, F.cross_entropy(_worst_logits(m, others, 4), y))
        for kappa in (0.0, 0.5):  # beta = 0 is IBP training with gamma = kappa: the same numbers
            pure_ibp, _ = ct.crown_ibp_loss(eps, kappa=kappa, beta=0.0)(model, x, y)
            torch.testing.assert_close(pure_ibp, ct.IBPLoss(eps, gamma=kappa)(model, x, y)[0])
        clean, _ = ct.crown_ibp_loss(eps, kappa=1.0)(model, x, y)
        torch.testing.assert_close(clean, F.cross_entropy(model(x), y))

    def no_crown(*args, **kwargs):
        raise AssertionError("beta = 0 must not run the CROWN pass")

    monkeypatch.setattr(crown, "crown_bounds", no_crown)
    with torch.no_grad():
        ct.crown_ibp_loss(eps, kappa=0.5, beta=0.0)(model, x, y)
        ct.crown_ibp_loss(eps, ramp_batches=3)(model, x, y)  # evaluation: beta_end = 0
    ct.crown_ibp_loss(eps, ramp_batches=2, beta=(0.0, 0.0))(model, x, y)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_robust_cross_entropy_bounds_the_loss_at_attacked_and_sampled_points(beta):
    model, (x, y) = _net(3), _batch(3, n=8)
    eps = 0.1
    with torch.no_grad():
        margins = ct.crown_ibp_margins(model, x, y, eps, beta=beta)
        worst = (-margins).scatter(1, y[:, None], 0.0)
        robust = F.cross_entropy(worst, y, reduction="none")  # per example
    x_adv = cl.attacks.pgd(model, x, y, eps, eps / 4, 20, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    samples = (x + eps * (2 * torch.rand(300, *x.shape, generator=g, dtype=x.dtype) - 1)).clamp(0, 1)
    with torch.no_grad():
        attacked = F.cross_entropy(model(x_adv), y, reduction="none")
        sampled = F.cross_entropy(model(samples.flatten(0, 1)), y.repeat(300), reduction="none").view(300, -1)
    assert (attacked <= robust + 1e-9).all()
    assert (sampled <= robust + 1e-9).all()
    assert (attacked >= F.cross_entropy(model(x), y, reduction="none").detach() - 1e-9).all()  # the attack worked


def test_evaluation_uses_the_final_values_and_keeps_the_counter():
    model, (x, y) = _net(4), _batch(4)
    loss_fn = ct.crown_ibp_loss(0.2, ramp_batches=10)
    loss_fn(model, x, y)
    with torch.no_grad():
        at_eval, _ = loss_fn(model, x, y)
        final, _ = ct.crown_ibp_loss(0.2, kappa=0.5, beta=0.0)(model, x, y)
    torch.testing.assert_close(at_eval, final)
    assert loss_fn.batches == 1 and len(loss_fn.kappa_history) == len(loss_fn.beta_history) == 1
    assert [loss_fn.kappa_at(t) for t in (0, 5, 10, 50)] == [1.0, 0.75, 0.5, 0.5]
    assert [loss_fn.beta_at(t) for t in (0, 5, 10, 50)] == [1.0, 0.5, 0.0, 0.0]
    assert ct.crown_ibp_loss(0.2).beta_at(0) == 0.0  # no ramp: the final values from the start
    assert (loss_fn.kappa, loss_fn.beta) == ((1.0, 0.5), (1.0, 0.0))  # the defaults
    assert repr(loss_fn) == "CROWNIBPLoss(eps=0.2, ramp_batches=10, kappa=(1, 0.5), beta=(1, 0))"


def test_gradients_reach_every_parameter():
    model, (x, y) = _net(5), _batch(5)
    loss, _ = ct.crown_ibp_loss(0.1, kappa=0.5, beta=0.5)(model, x, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_training_a_tiny_mlp_reduces_the_robust_loss():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (96,), generator=g)
    centres = torch.tensor([[0.2, 0.2], [0.8, 0.2], [0.5, 0.8]])
    x = (centres[y] + 0.05 * torch.randn(96, 2, generator=g)).clamp(0, 1)
    loader = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    measure = ct.crown_ibp_loss(0.05, kappa=0.5, beta=0.5)
    with torch.no_grad():
        before = measure(model, x, y)[0].item()
    loss_fn = ct.crown_ibp_loss(0.05, ramp_batches=6)
    train.train(model, loader, epochs=20, lr=0.02, batch_loss=loss_fn, progress=False)
    with torch.no_grad():
        after = measure(model, x, y)[0].item()
    assert loss_fn.batches == 60 and loss_fn.beta_history[6:] == [0.0] * 54
    assert after < 0.5 * before, (before, after)  # measured: 1.13 -> 0.12


def test_margin_spec():
    y = torch.tensor([2, 0, 1])
    torch.testing.assert_close(specification.margin_spec(y, 4), _spec_by_hand(y, 4).float())
    for bad, name in [((torch.tensor([0, 3]), 3), "y"), ((torch.tensor([0.0]), 3), "y"),
                      ((torch.tensor([0]), 1), "num_classes"), ((torch.tensor([0]), 2.0), "num_classes")]:
        with pytest.raises(ValueError, match=name):
            specification.margin_spec(*bad)


@pytest.mark.parametrize("kwargs, name", [({"eps": -0.1}, "eps"), ({"eps": float("inf")}, "eps"),
                                          ({"eps": 0.1, "ramp_batches": -1}, "ramp_batches"),
                                          ({"eps": 0.1, "ramp_batches": 2.5}, "ramp_batches"),
                                          ({"eps": 0.1, "kappa": 1.5}, "kappa"),
                                          ({"eps": 0.1, "kappa": (1.0, -0.5)}, "kappa"),
                                          ({"eps": 0.1, "kappa": (1.0,)}, "kappa"),
                                          ({"eps": 0.1, "kappa": "high"}, "kappa"),
                                          ({"eps": 0.1, "beta": (True, 0.0)}, "beta"),
                                          ({"eps": 0.1, "beta": float("nan")}, "beta")])
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ct.crown_ibp_loss(**kwargs)


def test_bad_inputs_to_the_margins_name_themselves():
    model, (x, y) = _net(6), _batch(6)
    with pytest.raises(ValueError, match="beta"):
        ct.crown_ibp_margins(model, x, y, 0.1, beta=2.0)
    with pytest.raises(ValueError, match="x must lie"):
        ct.crown_ibp_margins(model, x + 1, y, 0.1)
    with pytest.raises(ValueError, match="y must"):
        ct.crown_ibp_margins(model, x, y + 4, 0.1)
    with pytest.raises(ValueError, match="fold_last"):
        ct.ibp_loss(0.1, fold_last="yes")


def _policy_cases():
    model, (x, y) = _net(7), _batch(7)

    def same_float(a, b):
        return a == pytest.approx(b, abs=1e-6)

    def close(a, b):
        return torch.allclose(a, b, atol=1e-6)

    return [
        (lambda v: ct.ibp_loss(v).eps, "eps", 0.1, same_float),
        (lambda v: ct.ibp_loss(0.1, gamma=v).gamma, "gamma", 0.5, float.__eq__),
        (lambda v: ct.ibp_loss(0.1, ramp_batches=v).ramp_batches, "ramp_batches", 4, int.__eq__),
        (lambda v: ct.IBPLoss(v).eps, "eps", 0.1, same_float),
        (lambda v: ct.crown_ibp_loss(v).eps, "eps", 0.1, same_float),
        (lambda v: ct.crown_ibp_loss(0.1, ramp_batches=v).kappa_at(2), "ramp_batches", 4, float.__eq__),
        (lambda v: ct.crown_ibp_loss(0.1, kappa=v).kappa, "kappa", 0.5, tuple.__eq__),
        (lambda v: ct.crown_ibp_loss(0.1, beta=(1.0, v)).beta, "beta", 0.25, tuple.__eq__),
        (lambda v: ct.CROWNIBPLoss(v).eps, "eps", 0.1, same_float),
        (lambda v: ct.crown_ibp_margins(model, x, y, v, beta=0.5), "eps", 0.1, close),
        (lambda v: specification.margin_spec(y, v), "num_classes", 4, torch.equal),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(ct).failed == 0
