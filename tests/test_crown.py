"""course_lib.crown: soundness against points of the ball, the ladder CROWN <= LP <= exact, a
brute-force reference on the plane, bad input, docstrings and the argument policy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import crown, ibp, layers, verification
from course_lib.crown import crown_bounds
from strategies import box_samples, random_case

pytestmark = pytest.mark.certify

METHODS = ("crown", "crown-ibp")


def _tol(*tensors):
    # float64 throughout: the bounds and a forward pass at a point round differently, by a few
    # ulps of the largest magnitudes involved; 1e-9 of them is far below any real violation
    return 1e-9 * (max(float(t.detach().abs().max()) for t in tensors) + 1.0)


def _relu_case(seed: int):
    """tests/strategies.py's random MLP or CNN with every activation made a ReLU (CROWN's)."""
    model, x, y, eps, g = random_case(seed)
    relu = nn.Sequential(*[nn.ReLU() if isinstance(m, (nn.Tanh, nn.Sigmoid)) else m for m in model])
    return relu, x, y, eps, g


def _pgd_points(f, x, eps, steps=25):
    """Sign-gradient descent on each column of f(x') (N, S), projected on the clipped ball:
    (S, N, ...) points, one per column."""
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    columns = f(x).shape[1]
    points = []
    for s in range(columns):
        x_adv = torch.lerp(lo, hi, 0.5)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(f(x_adv)[:, s].sum(), x_adv)
            x_adv = torch.minimum(torch.maximum(x_adv.detach() - max(eps, 1e-3) / 4 * grad.sign(), lo), hi)
        points.append(x_adv.detach())
    return torch.stack(points)


# ---------------------------------------------------------------------------
# (1) soundness on random MLPs and CNNs
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(36))
def test_bounds_contain_sampled_corner_and_pgd_points(seed):
    model, x, _, eps, g = _relu_case(seed)
    k = model[-1].out_features
    C = torch.randn(x.shape[0], 3, k, generator=g, dtype=x.dtype)
    spec = lambda z: torch.einsum("nsk,nk->ns", C, model(z))  # noqa: E731
    points = [box_samples(x, eps, g, 300), _pgd_points(spec, x, eps), _pgd_points(lambda z: -spec(z), x, eps)]
    d = x[0].numel()
    if d <= 8:  # every corner of every example's box
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        signs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=d)), dtype=x.dtype)
        points.append(lo + signs.view(-1, 1, *x.shape[1:]) * (hi - lo))
    pts = torch.cat(points)  # (P, N, ...)
    with torch.no_grad():
        z = model(pts.flatten(0, 1)).view(pts.shape[0], x.shape[0], k)
        values = torch.einsum("nsk,pnk->pns", C, z)
    for method in METHODS:
        lower, upper = crown_bounds(model, x, eps, C=C, method=method)
        assert lower.shape == upper.shape == (x.shape[0], 3)
        tol = _tol(lower, upper)
        assert (values >= lower - tol).all() and (values <= upper + tol).all(), f"{method}: a point left the bounds"
        logits_lo, logits_hi = crown_bounds(model, x, eps, method=method)  # C = None: the logits
        assert (z >= logits_lo - tol).all() and (z <= logits_hi + tol).all(), f"{method}: a logit left the bounds"


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1), dict(stride=3), dict(dilation=2, padding=2),
                                    dict(groups=2, padding=1), dict(padding=1, padding_mode="reflect"),
                                    dict(padding="same", bias=False)])
def test_conv_rules_are_the_transpose_of_the_conv(kwargs):
    # <A, conv(v) - b> = <A W, v> for every v: the pull-back is the adjoint of the linear part
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, **kwargs).double()
    v = torch.randn(3, 2, 7, 8, generator=g, dtype=torch.float64)
    out = conv(v)
    A = torch.randn(3, 5, *out.shape[1:], generator=g, dtype=torch.float64)
    back, offset = layers.rule_for(conv).linear(conv, A, tuple(v.shape[1:]))
    lhs = torch.einsum("nsd,nd->ns", A.flatten(2), out.flatten(1))
    rhs = torch.einsum("nsd,nd->ns", back.flatten(2), v.flatten(1)) + offset
    torch.testing.assert_close(lhs, rhs)


@pytest.mark.parametrize("seed", range(4))
def test_eps_zero_gives_the_forward_pass(seed):
    model, x, _, _, _ = _relu_case(seed)
    z = model(x).detach()
    for method in METHODS:
        lower, upper = crown_bounds(model, x, 0.0, method=method)
        torch.testing.assert_close(lower, z)
        torch.testing.assert_close(upper, z)


def test_per_example_eps_matches_separate_calls():
    model, x, _, _, _ = _relu_case(4)
    eps = torch.tensor([0.0, 0.05, 0.3, 2.0][: x.shape[0]], dtype=x.dtype)
    for method in METHODS:
        lower, upper = crown_bounds(model, x, eps, method=method)
        for i in range(x.shape[0]):
            one = crown_bounds(model, x[i:i + 1], eps[i], method=method)
            torch.testing.assert_close((lower[i:i + 1], upper[i:i + 1]), one)


def test_a_registered_affine_type_is_transposed_by_autograd():
    class Scale(nn.Module):  # a toy affine layer registered for IBP only
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.tensor([2.0, -3.0], dtype=torch.float64))

        def forward(self, x):
            return x * self.gain

    layers.register_affine(Scale, lambda layer, x, W, b: x * W, weight=lambda layer: layer.gain,
                           bias=lambda layer: None, fan_in=lambda layer: 1)
    try:
        model = nn.Sequential(nn.Linear(2, 2), Scale(), nn.ReLU(), nn.Linear(2, 2)).double()
        x = torch.rand(4, 2, dtype=torch.float64)
        lower, upper = crown_bounds(model, x, 0.2)
        with torch.no_grad():
            z = model(box_samples(x, 0.2, torch.Generator().manual_seed(1), 500).flatten(0, 1)).view(500, 4, 2)
        assert (z >= lower - 1e-9).all() and (z <= upper + 1e-9).all()
    finally:
        layers.unregister(Scale)


def test_bounds_are_differentiable():
    model, x, _, eps, _ = _relu_case(2)
    for method in METHODS:
        lower, upper = crown_bounds(model, x, 0.1, method=method)
        grads = torch.autograd.grad((upper - lower).sum(), list(model.parameters()), allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


# ---------------------------------------------------------------------------
# (2) tightness: the ladder CROWN <= LP <= exact with the same pre-activation bounds
# ---------------------------------------------------------------------------

def _small_mlp(seed: int, d: int = 3, m: int = 6, k: int = 3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, m), nn.ReLU(), nn.Linear(m, k)).double()


@pytest.mark.parametrize("seed", range(16))
def test_crown_is_below_the_lp_which_is_below_the_exact_minimum(seed):
    model = _small_mlp(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, generator=g, dtype=torch.float64)
    eps = [0.05, 0.2, 0.5, 1.0][seed % 4]
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    for y, t in [(0, 1), (1, 2), (2, 0)]:
        c = verification.margin_vector(3, y, t)
        C = torch.from_numpy(c).view(1, 1, 3)
        # one hidden layer: CROWN's pre-activation bounds are the first layer's exact box, IBP's
        bound, upper = (b.item() for b in crown_bounds(model, x, eps, C=C))
        assert bound == pytest.approx(crown_bounds(model, x, eps, C=C, method="crown-ibp")[0].item(), abs=1e-12)
        lp = verification.lp_lower_bound(model, lo[0].numpy(), hi[0].numpy(), c)
        exact, _ = verification.exact_minimum(model, lo[0].numpy(), hi[0].numpy(), c)
        top, _ = verification.exact_minimum(model, lo[0].numpy(), hi[0].numpy(), -c)
        assert bound <= lp + 1e-7 <= exact + 2e-7, (bound, lp, exact)
        assert upper >= -top - 1e-7  # mirrored: the upper bound is above the exact maximum


@pytest.mark.parametrize("seed", range(8))
def test_all_stable_relus_make_crown_exact_and_no_looser_than_ibp(seed):
    # with every ReLU stable the network is affine on the box: CROWN minimizes that affine map
    # exactly, IBP bounds it term by term. (With unstable ReLUs neither is always tighter.)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        model[0].bias.copy_(torch.where(torch.rand(5) < 0.5, 10.0, -10.0))
    x = torch.rand(2, 4, dtype=torch.float64)
    lower, upper = crown_bounds(model, x, 0.05)
    ibp_lower, ibp_upper = ibp.ibp_bounds(model, x, 0.05)
    assert (lower >= ibp_lower - 1e-12).all() and (upper <= ibp_upper + 1e-12).all()
    lo, hi = (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1)
    corners = torch.tensor(list(itertools.product((0.0, 1.0), repeat=4)), dtype=x.dtype)[:, None]
    z = model(lo + corners * (hi - lo)).detach()  # an affine map's extremes are at corners
    torch.testing.assert_close(lower, z.min(0).values)
    torch.testing.assert_close(upper, z.max(0).values)


def test_crown_is_often_tighter_than_ibp_on_deeper_nets():
    # not always (hence no per-case assert), but on random 3-hidden-layer nets usually
    wins = 0
    for seed in range(10):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                              nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)).double()
        x = torch.rand(1, 4, dtype=torch.float64)
        lower, upper = crown_bounds(model, x, 0.1)
        ibp_lower, ibp_upper = ibp.ibp_bounds(model, x, 0.1)
        wins += bool(((upper - lower) < (ibp_upper - ibp_lower)).all())
    assert wins >= 7


# ---------------------------------------------------------------------------
# (3) an independent reference: the plane, sampled densely
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_dense_grid_on_the_plane_lies_inside_and_near_the_bounds(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    x = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    eps = 0.25
    axis = torch.linspace(0, 1, 301, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis) * 2 * eps + (x - eps).clamp(0, 1)  # x is inside: no clipping
    with torch.no_grad():
        z = model(grid)
    for method in METHODS:
        lower, upper = crown_bounds(model, x, eps, method=method)
        assert (z.min(0).values >= lower[0] - 1e-9).all() and (z.max(0).values <= upper[0] + 1e-9).all()


# ---------------------------------------------------------------------------
# (4) bad input
# ---------------------------------------------------------------------------

def test_bad_input_errors_name_the_argument_or_the_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(TypeError, match="MaxPool2d"):
        crown_bounds(nn.Sequential(nn.Conv2d(1, 2, 1), nn.MaxPool2d(2), nn.Flatten()), x, 0.1)
    with pytest.raises(TypeError, match="layer 2 .*Sigmoid"):
        crown_bounds(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)), x, 0.1)
    for eps in (-0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="eps"):
            crown_bounds(model, x, eps)
    with pytest.raises(ValueError, match="x must lie"):
        crown_bounds(model, x + 1, 0.1)
    for C in (torch.zeros(2, 1, 3), torch.zeros(3, 1, 2), torch.zeros(2, 2), torch.zeros(2, 0, 2), np.zeros((2, 1, 2))):
        with pytest.raises(ValueError, match="C must"):
            crown_bounds(model, x, 0.1, C=C)
    with pytest.raises(ValueError, match="C must hold finite"):
        crown_bounds(model, x, 0.1, C=torch.full((2, 1, 2), float("nan")))
    for method in ("CROWN", "alpha-crown", None):
        with pytest.raises(ValueError, match="method"):
            crown_bounds(model, x, 0.1, method=method)


def test_inputs_are_left_alone():
    model, x, _, eps, g = _relu_case(5)
    C = torch.randn(x.shape[0], 2, model[-1].out_features, generator=g, dtype=x.dtype)
    x0, C0, params = x.clone(), C.clone(), [p.clone() for p in model.parameters()]
    for method in METHODS:
        crown_bounds(model, x, eps, C=C, method=method)
    assert torch.equal(x, x0) and torch.equal(C, C0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))


# ---------------------------------------------------------------------------
# (5) docstrings, (6) the argument policy
# ---------------------------------------------------------------------------

def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(crown)
    assert result.failed == 0 and result.attempted > 0


def _policy_cases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    same = lambda a, b: all(torch.equal(p, q) for p, q in zip(a, b))  # noqa: E731
    return {
        "crown_bounds eps": (lambda v: crown_bounds(model, x, v), "eps", 0.1, same),
        "crown_bounds crown-ibp eps": (lambda v: crown_bounds(model, x, v, method="crown-ibp"), "eps", 0.1, same),
    }


@pytest.mark.parametrize("case", list(_policy_cases()))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)
