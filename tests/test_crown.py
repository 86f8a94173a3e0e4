"""course_lib.crown: soundness against points of the ball, the ladder CROWN <= alpha-CROWN <= LP
<= exact, a brute-force reference on the plane, sound CROWN (course_lib.crown_sound) against the
network's exact real arithmetic, bad input, docstrings and the argument policy."""

from __future__ import annotations

import copy
import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import crown, crown_sound, ibp, layers, specification, verification
from course_lib.crown import crown_bounds
from strategies import box_samples, random_case

pytestmark = pytest.mark.certify

METHODS = ("crown", "crown-ibp", "alpha-crown")


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


def _margin_cases(seed):
    """A small one-hidden-layer MLP, one input, a radius, and each margin's (c, C, lo, hi): the
    specification as a vector for verification and as (1, 1, 3) for crown_bounds, the clipped box."""
    model = _small_mlp(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, generator=g, dtype=torch.float64)
    eps = [0.05, 0.2, 0.5, 1.0][seed % 4]
    lo, hi = ((x - eps).clamp(0, 1)[0].numpy(), (x + eps).clamp(0, 1)[0].numpy())
    margins = [verification.margin_vector(3, y, t) for y, t in [(0, 1), (1, 2), (2, 0)]]
    return model, x, eps, [(c, torch.from_numpy(c).view(1, 1, 3), lo, hi) for c in margins]


@pytest.mark.parametrize("seed", range(16))
def test_crown_is_below_the_lp_which_is_below_the_exact_minimum(seed):
    model, x, eps, cases = _margin_cases(seed)
    for c, C, lo, hi in cases:
        # one hidden layer: CROWN's pre-activation bounds are the first layer's exact box, IBP's
        bound, upper = (b.item() for b in crown_bounds(model, x, eps, C=C))
        assert bound == pytest.approx(crown_bounds(model, x, eps, C=C, method="crown-ibp")[0].item(), abs=1e-12)
        lp = verification.lp_lower_bound(model, lo, hi, c)
        exact, _ = verification.exact_minimum(model, lo, hi, c)
        top, _ = verification.exact_minimum(model, lo, hi, -c)
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
# (4) sound CROWN: the bounds hold for the network's exact real arithmetic
# ---------------------------------------------------------------------------

def _float32_case(seed: int):
    """A ReLU case in float32, and the same weights exactly in float64: the reference, whose
    rounding is 2**29 times finer than the float32 bounds' (outward) rounding."""
    model, x, y, eps, g = _relu_case(seed)
    model32 = copy.deepcopy(model).float()
    return model32, copy.deepcopy(model32).double(), x.float(), eps, g


def _points(model, x, eps, g, spec, count=300):
    """Points of the ball around x (x's dtype): samples, random corners, every corner of a small
    box, and PGD points descending and ascending each column of ``spec(model(.))``: (P, N, ...)."""
    f = lambda z: spec(model(z))  # noqa: E731
    points = [box_samples(x, eps, g, count), x[None], _pgd_points(f, x, eps), _pgd_points(lambda z: -f(z), x, eps)]
    d = x[0].numel()
    if d <= 8:
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        signs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=d)), dtype=x.dtype)
        points.append(lo + signs.view(-1, 1, *x.shape[1:]) * (hi - lo))
    return torch.cat(points)


@pytest.mark.parametrize("seed", range(36))
def test_sound_bounds_contain_the_real_outputs_of_float32_networks(seed):
    model32, model64, x32, eps, g = _float32_case(seed)
    k = model32[-1].out_features
    C = torch.randn(x32.shape[0], 3, k, generator=g).round()  # integers: exact in float32
    spec = lambda z: torch.einsum("nsk,nk->ns", C.double(), z)  # noqa: E731
    pts = _points(model64, x32.double(), eps, g, spec)
    with torch.no_grad():
        z = model64(pts.flatten(0, 1)).view(pts.shape[0], x32.shape[0], k)
        values = torch.einsum("nsk,pnk->pns", C.double(), z)
    for method in METHODS:
        lower, upper = crown_bounds(model32, x32, eps, C=C, method=method, sound=True)
        assert lower.dtype == torch.float32 and lower.shape == (x32.shape[0], 3)
        third = crown_bounds(model32, x32, eps, C=C.double() / 3, method=method, sound=True)  # C in float64
        v = torch.einsum("nsk,pnk->pns", C.double() / 3, z)
        assert (v >= third[0].double()).all() and (v <= third[1].double()).all(), method
        assert (values >= lower.double()).all() and (values <= upper.double()).all(), method
        logits_lo, logits_hi = crown_bounds(model32, x32, eps, method=method, sound=True)
        assert (z >= logits_lo.double()).all() and (z <= logits_hi.double()).all(), method


def _exact_net(model):
    """The network (Linear, ReLU, Flatten) in exact rational arithmetic: a function of a list of
    Fractions (the flattened input) returning the logits as Fractions."""
    steps = []
    for layer in model:
        if isinstance(layer, nn.Linear):
            W = [[Fraction(w) for w in row] for row in layer.weight.double().tolist()]
            b = [Fraction(v) for v in layer.bias.double().tolist()] if layer.bias is not None else [0] * len(W)
            steps.append(lambda z, W=W, b=b: [sum(w * v for w, v in zip(row, z)) + bi for row, bi in zip(W, b)])
        elif isinstance(layer, nn.ReLU):
            steps.append(lambda z: [max(v, Fraction(0)) for v in z])

    def run(z):
        for step in steps:
            z = step(z)
        return z

    return run


def _real_ball_point(p, x, eps):
    """A float point moved (exactly, in Fractions) into the real ball: [x - eps, x + eps] & [0, 1]."""
    e = Fraction(eps)
    return [min(max(Fraction(v), Fraction(c) - e, Fraction(0)), Fraction(c) + e, Fraction(1))
            for v, c in zip(p, x)]


@pytest.mark.parametrize("seed", range(12))
def test_sound_bounds_hold_in_exact_rational_arithmetic(seed):
    dtype = (torch.float64, torch.float32)[seed % 2]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    d = 2 + seed % 3
    model = nn.Sequential(nn.Linear(d, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).to(dtype)
    x = torch.rand(2, d, generator=g, dtype=torch.float64).to(dtype)
    x[x < 0.2] = 0.0
    eps = [0.0, 1e-7, 0.05, 0.3][seed % 4]
    C = torch.tensor([[[1.0, -1.0]], [[-1.0, 1.0]]], dtype=dtype)
    spec = lambda z: torch.einsum("nsk,nk->ns", C, z)  # noqa: E731
    pts = _points(model, x, eps, g, spec, count=40).detach()
    net = _exact_net(model)
    for method in METHODS:
        lower, upper = crown_bounds(model, x, eps, C=C, method=method, sound=True)
        for p in pts:
            for n in range(x.shape[0]):
                z = net(_real_ball_point(p[n].tolist(), x[n].tolist(), eps))
                margin = (1 if n == 0 else -1) * (z[0] - z[1])
                assert Fraction(lower[n, 0].item()) <= margin <= Fraction(upper[n, 0].item()), (method, n)


@pytest.mark.parametrize("seed", range(36))
def test_sound_bounds_enclose_the_plain_ones_and_are_barely_wider(seed):
    # sound CROWN runs in float64: it encloses plain CROWN in float64 (the real CROWN value up to
    # ~1e-13), and a float32 model's sound bounds are its plain float32 ones up to their rounding.
    # Measured on these cases: at most 2e-13 (float64) and 6e-8 (float32) of the bounds' scale.
    # alpha-CROWN optimizes its slopes against the sound pre-activation bounds, a path a hair
    # away from the plain one's: close, not enclosing
    model64, x64, _, eps, _ = _relu_case(seed)
    model32, x32 = copy.deepcopy(model64).float(), x64.float()
    model64 = copy.deepcopy(model32).double()  # the float32 weights, exactly
    for method in METHODS:
        plain_lo, plain_hi = (b.detach() for b in crown_bounds(model64, x32.double(), eps, method=method))
        scale = float((plain_hi - plain_lo).max() + plain_hi.abs().max() + plain_lo.abs().max()) + 1
        encloses = method != "alpha-crown"
        lower, upper = (b.detach() for b in crown_bounds(model64, x32.double(), eps, method=method, sound=True))
        assert not encloses or ((lower <= plain_lo).all() and (upper >= plain_hi).all()), method
        assert float((plain_lo - lower).abs().max()) <= 1e-10 * scale, method
        assert float((upper - plain_hi).abs().max()) <= 1e-10 * scale, method
        lower, upper = (b.detach().double() for b in crown_bounds(model32, x32, eps, method=method, sound=True))
        assert not encloses or ((lower <= plain_lo).all() and (upper >= plain_hi).all()), method
        plain_lo, plain_hi = (b.detach().double() for b in crown_bounds(model32, x32, eps, method=method))
        assert float((plain_lo - lower).abs().max()) <= 1e-5 * scale, method
        assert float((upper - plain_hi).abs().max()) <= 1e-5 * scale, method


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_rounded_sum_fools_plain_crown_but_not_sound_crown(dtype):
    # logits 1 + x at x = u / 2 (half the unit roundoff): 1 + x rounds (to even) to 1, so the
    # plain bounds at eps = 0 are [1, 1] and the real output 1 + u / 2 lies above them
    half_u = torch.finfo(dtype).eps / 4
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)).to(dtype)
    with torch.no_grad():
        model[0].weight.fill_(1.0), model[0].bias.zero_(), model[2].weight.fill_(1.0), model[2].bias.fill_(1.0)
    x = torch.tensor([[half_u]], dtype=dtype)
    real = 1 + Fraction(half_u)
    for method in METHODS:
        plain = crown_bounds(model, x, 0.0, method=method)[1].item()
        assert Fraction(plain) < real, "the plain bound should miss here"
        lower, upper = (Fraction(b.item()) for b in crown_bounds(model, x, 0.0, method=method, sound=True))
        assert lower <= real <= upper
        assert upper - lower <= 32 * torch.finfo(dtype).eps  # a few roundings of the constant, each one ulp


@pytest.mark.parametrize("seed", range(8))
def test_huge_cancellation_is_caught(seed):
    # rows of the first layer nearly cancel each other's large weights (2 ** 12), the last layer
    # is large too: plain float32 CROWN misses the real output at eps = 0 in most of these nets,
    # sound CROWN contains it, checked exactly (Fractions), also at eps = 1e-6
    g = torch.Generator().manual_seed(seed)
    d, h, M = 4, 6, 2.0 ** 12
    W1 = (torch.randn(d, generator=g) + torch.randn(h, d, generator=g) * 1e-3) * M
    W1[1::2] = -W1[0::2] + torch.randn(h // 2, d, generator=g) * 1e-3 * M
    model = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2))
    with torch.no_grad():
        model[0].weight.copy_(W1), model[0].bias.copy_(torch.randn(h, generator=g))
        model[2].weight.copy_(torch.randn(2, h, generator=g) * M), model[2].bias.zero_()
    x = torch.rand(3, d, generator=g)
    net = _exact_net(model)
    missed = 0
    for eps in (0.0, 1e-6):
        pts = _points(model, x, eps, g, lambda z: z, count=20).detach()
        for method in METHODS:
            lower, upper = crown_bounds(model, x, eps, method=method, sound=True)
            plain_lo, plain_hi = crown_bounds(model, x, eps, method=method)
            for p in pts:
                for n in range(x.shape[0]):
                    z = net(_real_ball_point(p[n].tolist(), x[n].tolist(), eps))
                    for j in range(2):
                        assert Fraction(lower[n, j].item()) <= z[j] <= Fraction(upper[n, j].item())
                        missed += not Fraction(plain_lo[n, j].item()) <= z[j] <= Fraction(plain_hi[n, j].item())
    assert missed > 0


@pytest.mark.parametrize("seed", range(8))
def test_sound_eps_zero_encloses_the_forward_pass(seed):
    # a float64 model: its forward pass, to 1e-16, is the real network; a float32 model's forward
    # pass rounds in float32, and may leave the (float64-accurate) sound bounds by that rounding
    model32, model64, x32, _, _ = _float32_case(seed)
    with torch.no_grad():
        z32, z64 = model32(x32), model64(x32.double())
    for method in METHODS:
        lower, upper = (b.detach() for b in crown_bounds(model64, x32.double(), 0.0, method=method, sound=True))
        assert (lower <= z64).all() and (z64 <= upper).all()
        assert float((upper - lower).max()) <= 1e-12 * (float(z64.abs().max()) + 1)
        lower, upper = (b.detach() for b in crown_bounds(model32, x32, 0.0, method=method, sound=True))
        assert (lower.double() <= z64).all() and (z64 <= upper.double()).all()
        assert float((upper - lower).max()) <= 1e-6 * (float(z32.abs().max()) + 1)  # a few float32 ulps
        slack = 1e-5 * (float(z32.abs().max()) + 1)
        assert (lower - slack <= z32).all() and (z32 <= upper + slack).all()


def test_without_sound_a_zero_width_box_misses_the_real_output():
    """Across random float32 networks at eps = 0 the plain bounds (the float forward pass, in
    effect) miss some real (float64) output; the sound bounds never do."""
    missed = 0
    for seed in range(24):
        model32, model64, x32, _, _ = _float32_case(seed)
        with torch.no_grad():
            z = model64(x32.double())
        plain = crown_bounds(model32, x32, 0.0)
        sound = crown_bounds(model32, x32, 0.0, sound=True)
        missed += int(((z < plain[0].double()) | (z > plain[1].double())).any())
        assert (z >= sound[0].double()).all() and (z <= sound[1].double()).all()
    assert missed > 0


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1), dict(padding=2, padding_mode="reflect"),
                                    dict(padding=1, padding_mode="circular"), dict(padding=2, padding_mode="replicate"),
                                    dict(padding="same", bias=False), dict(groups=2, dilation=2, padding=1)])
def test_sound_bounds_through_convolutions_contain_the_real_outputs(kwargs):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model32 = nn.Sequential(nn.Conv2d(2, 4, 3, **kwargs), nn.ReLU(), nn.Flatten())
    with torch.no_grad():
        width = model32(torch.zeros(1, 2, 6, 6)).shape[1]
    model32.extend([nn.Linear(width, 5), nn.ReLU(), nn.Linear(5, 3)])
    model64 = copy.deepcopy(model32).double()
    x32 = torch.rand(2, 2, 6, 6, generator=g)
    eps = 0.05
    pts = _points(model64, x32.double(), eps, g, lambda z: z)
    with torch.no_grad():
        z = model64(pts.flatten(0, 1)).view(pts.shape[0], 2, 3)
    for method in METHODS:
        lower, upper = crown_bounds(model32, x32, eps, method=method, sound=True)
        assert (z >= lower.double()).all() and (z <= upper.double()).all(), method
        if method != "alpha-crown":  # plain CROWN in float64 (the real CROWN, to 1e-13) is inside
            plain_lo, plain_hi = crown_bounds(model64, x32.double(), eps, method=method)
            assert (lower.double() <= plain_lo).all() and (upper.double() >= plain_hi).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sound_bounds_contain_the_real_outputs():
    model32, model64, x32, eps, g = _float32_case(7)
    pts = _points(model64, x32.double(), eps, g, lambda z: z)
    with torch.no_grad():
        z = model64(pts.flatten(0, 1)).view(pts.shape[0], x32.shape[0], -1)
    for method in METHODS:
        lower, upper = crown_bounds(model32.cuda(), x32.cuda(), eps, method=method, sound=True)
        assert lower.is_cuda and (z >= lower.cpu().double()).all() and (z <= upper.cpu().double()).all()


def test_sound_per_example_eps_matches_separate_calls():
    model, x, _, _, _ = _relu_case(4)
    eps = torch.tensor([0.0, 0.05, 0.3, 2.0][: x.shape[0]], dtype=x.dtype)
    lower, upper = crown_bounds(model, x, eps, sound=True)
    for i in range(x.shape[0]):
        one = crown_bounds(model, x[i:i + 1], eps[i], sound=True)
        torch.testing.assert_close((lower[i:i + 1], upper[i:i + 1]), one, rtol=1e-12, atol=1e-300)


def test_sound_refuses_what_it_cannot_bound():
    x = torch.rand(2, 1, 2, 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    for flag in ("yes", 1, None):
        with pytest.raises(ValueError, match="sound"):
            crown_bounds(model, x, 0.1, sound=flag)

    class Scale(nn.Module):  # a registered affine type: plain CROWN transposes it, sound has no error bound
        def forward(self, z):
            return 2 * z

    layers.register_affine(Scale, lambda layer, z, W, b: z * W, weight=lambda layer: torch.tensor(2.0),
                           bias=lambda layer: None, fan_in=lambda layer: 1)
    try:
        scaled = nn.Sequential(nn.Flatten(), Scale(), nn.Linear(4, 2))
        crown_bounds(scaled, x, 0.1)
        with pytest.raises(TypeError, match="sound CROWN supports .*layer 1 .*Scale"):
            crown_bounds(scaled, x, 0.1, sound=True)
    finally:
        layers.unregister(Scale)


def test_sound_bounds_are_differentiable_and_work_without_grad():
    model, x, _, eps, _ = _relu_case(2)
    lower, upper = crown_bounds(model, x, 0.1, sound=True)
    grads = torch.autograd.grad((upper - lower).sum(), list(model.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        again = crown_bounds(model, x, 0.1, sound=True)
    torch.testing.assert_close((lower, upper), again)


def test_sound_relu_lines_hold_in_exact_arithmetic():
    # the plain line (intercept -a_hi l rounded to nearest) dips below relu at an end, in exact
    # arithmetic, in most of these cases; the sound one never does (scales from 1e-6 to 1e6)
    g = torch.Generator().manual_seed(0)
    plain_misses = 0
    for dtype in (torch.float32, torch.float64):
        scale = lambda: 10.0 ** torch.randint(-6, 7, (2000,), generator=g, dtype=torch.float64)  # noqa: E731
        lower = (-torch.rand(2000, generator=g, dtype=torch.float64) * scale()).to(dtype)
        upper = (torch.rand(2000, generator=g, dtype=torch.float64) * scale()).to(dtype)
        a_lo, a_hi, b_hi = crown_sound.relu_lines(lower, upper)
        assert ((a_hi >= 0) & (a_hi <= 1) & ((a_lo == 0) | (a_lo == 1))).all()
        plain_b = crown.relu_relaxation(nn.ReLU(), lower, upper)[3]
        for l, u, a, b, p in zip(lower.tolist(), upper.tolist(), a_hi.tolist(), b_hi.tolist(), plain_b.tolist()):
            l, u, a, b, p = (Fraction(v) for v in (l, u, a, b, p))
            assert a * l + b >= 0 and a * u + b >= u  # above relu at both ends: on all of [l, u]
            plain_misses += not (a * l + p >= 0 and a * u + p >= u)
    assert plain_misses > 0


# ---------------------------------------------------------------------------
# (5) alpha-CROWN: CROWN <= alpha-CROWN <= LP with the same pre-activation bounds
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(16))
def test_alpha_crown_lies_between_crown_and_the_lp(seed):
    model, x, eps, cases = _margin_cases(seed)
    for c, C, lo, hi in cases:
        bound, upper = crown_bounds(model, x, eps, C=C)
        alpha, alpha_upper = crown_bounds(model, x, eps, C=C, method="alpha-crown")
        lp = verification.lp_lower_bound(model, lo, hi, c)
        top = -verification.lp_lower_bound(model, lo, hi, -c)
        assert bound.item() <= alpha.item() <= lp + 1e-7, (bound.item(), alpha.item(), lp)
        assert upper.item() >= alpha_upper.item() >= top - 1e-7


def test_alpha_crown_improves_on_crown_and_zero_steps_is_crown():
    gains = 0
    for seed in range(6):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)).double()
        x = torch.rand(2, 4, dtype=torch.float64)
        crown_lo, crown_hi = crown_bounds(model, x, 0.2)
        alpha_lo, alpha_hi = crown_bounds(model, x, 0.2, method="alpha-crown")
        assert (alpha_lo >= crown_lo).all() and (alpha_hi <= crown_hi).all()
        gains += bool((alpha_lo > crown_lo + 1e-6).any())
        zero = crown_bounds(model, x, 0.2, method="alpha-crown", alpha_steps=0)
        assert torch.equal(zero[0], crown_lo) and torch.equal(zero[1], crown_hi)
    assert gains >= 3


def test_alpha_crown_leaves_the_model_alone_and_runs_without_grad():
    model, x, _, eps, _ = _relu_case(6)
    with torch.no_grad():
        lower, upper = crown_bounds(model, x, eps, method="alpha-crown")
    assert all(p.grad is None for p in model.parameters())
    assert (lower <= upper).all()


# ---------------------------------------------------------------------------
# (6) bad input
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
    for method in ("CROWN", "alpha_crown", None):
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
# certification: certify, certified_accuracy, the margin specification
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_certify_is_every_margin_bound_positive_and_no_point_of_the_ball_changes_class(seed):
    model, x, y, eps, g = _relu_case(seed)
    k = model[-1].out_features
    with torch.no_grad():
        y = model(x).argmax(1)  # the model's own labels: some examples certify at small eps
    for method in METHODS:
        certified = crown.certify(model, x, y, eps, method=method)
        lower, _ = crown_bounds(model, x, eps, C=specification.margin_spec(y, k), method=method)
        assert torch.equal(certified, (lower > 0).all(1))
        points = torch.cat([box_samples(x, eps, g, 200), _pgd_points(lambda z: -model(z), x, eps)])
        with torch.no_grad():
            labels = model(points.flatten(0, 1)).argmax(-1).view(points.shape[0], x.shape[0])
        assert (labels[:, certified] == y[certified]).all(), method
    sound = crown.certify(model, x, y, eps, sound=True)
    assert not (sound & ~crown.certify(model, x, y, eps)).any()  # sound certifies no more than plain


def test_certified_accuracy_counts_certify_over_batches_and_is_below_pgd():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).double()
    x = torch.rand(50, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:5] = (y[:5] + 1) % 3  # five misclassified examples: never certified
    for eps in (0.0, 0.01, 0.05):
        expected = crown.certify(model, x, y, eps).double().mean().item()
        for batch_size in (7, 50, 256):
            assert crown.certified_accuracy(model, (x, y), eps, batch_size=batch_size) == pytest.approx(expected)
        loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 50, 16)]
        assert crown.certified_accuracy(model, loader, eps) == pytest.approx(expected)
        assert expected <= 45 / 50
    assert crown.certified_accuracy(model, (x, y), 0.0) == pytest.approx(45 / 50)  # eps = 0: clean accuracy
    with pytest.raises(ValueError, match="no examples"):
        crown.certified_accuracy(model, (x[:0], y[:0]), 0.1)
    with pytest.raises(ValueError, match="y must"):
        crown.certify(model, x, y[:3], 0.1)
    with pytest.raises(ValueError, match="method"):
        crown.certified_accuracy(model, (x, y), 0.1, method="lp")


@pytest.mark.parametrize("seed", range(6))
def test_lower_only_is_the_lower_half_and_chunked_layer_bounds_are_the_same(seed, monkeypatch):
    model, x, _, eps, g = _relu_case(seed)
    C = torch.randn(x.shape[0], 2, model[-1].out_features, generator=g, dtype=x.dtype)
    for method in METHODS:
        for sound in (False, True):
            lower, _ = crown_bounds(model, x, eps, C=C, method=method, sound=sound)
            alone, none = crown_bounds(model, x, eps, C=C, method=method, sound=sound, lower_only=True)
            assert none is None
            torch.testing.assert_close(alone, lower, rtol=1e-12, atol=1e-12)
    whole = crown_bounds(model, x, eps, C=C)
    monkeypatch.setattr(crown, "_ROW_BUDGET", 1)  # one unit per backward pass
    chunked = crown_bounds(model, x, eps, C=C)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _leaky_lines(layer: nn.LeakyReLU, lower, upper):
    """LeakyReLU (slope a in [0, 1] below 0) between two lines on [l, u]: the chord above (it is
    convex), and below the line through 0 of slope a or 1, whichever side is wider (as ReLU's)."""
    a, one = torch.full_like(lower, layer.negative_slope), torch.ones_like(lower)  # lower's dtype
    f = lambda z: torch.where(z >= 0, z, a * z)  # noqa: E731
    unstable = (lower < 0) & (upper > 0)
    width = torch.where(unstable, upper - lower, one)
    chord = torch.where(unstable, (f(upper) - f(lower)) / width, torch.where(lower >= 0, one, a))
    a_hi, b_hi = chord, torch.where(unstable, f(lower) - chord * lower, torch.zeros_like(lower))
    a_lo = torch.where(unstable, torch.where(upper > -lower, one, a), chord)
    return a_lo, torch.zeros_like(lower), a_hi, b_hi


def test_an_activation_registered_with_its_lines_is_bounded_by_crown():
    """README's recipe: an activation needs register_monotone (IBP) and register_linear (CROWN)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.LeakyReLU(0.2), nn.Linear(6, 5), nn.LeakyReLU(0.2), nn.Linear(5, 2))
    model = model.double()
    x = torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="LeakyReLU"):
        crown_bounds(model, x, 0.1)  # not in the table
    layers.register_monotone(nn.LeakyReLU)
    try:
        with pytest.raises(TypeError, match="register_linear"):
            crown_bounds(model, x, 0.1)  # in the table for IBP, without CROWN's lines
        layers.register_linear(nn.LeakyReLU, _leaky_lines)
        g = torch.Generator().manual_seed(1)
        for eps in (0.0, 0.05, 0.3):
            points = box_samples(x, eps, g, 2000)
            with torch.no_grad():
                z = model(points.flatten(0, 1)).view(points.shape[0], x.shape[0], 2)
            for method in METHODS:
                lower, upper = crown_bounds(model, x, eps, method=method)
                assert (z >= lower - 1e-9).all() and (z <= upper + 1e-9).all(), (eps, method)
            ibp_lo, ibp_hi = ibp.ibp_bounds(model, x, eps)
            assert (lower >= ibp_lo - 1e-9).float().mean() > 0.5  # mostly tighter than IBP's box
    finally:
        layers.unregister(nn.LeakyReLU)


def test_margin_spec_rows_give_the_margins():
    y = torch.tensor([2, 0, 1])
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    margins = torch.einsum("nsk,nk->ns", specification.margin_spec(y, 4), z)
    others = specification.other_classes(y, 4)
    assert others.tolist() == [[0, 1, 3], [1, 2, 3], [0, 2, 3]]
    torch.testing.assert_close(margins, z.gather(1, y[:, None]) - z.gather(1, others))


# ---------------------------------------------------------------------------
# (7) docstrings, (8) the argument policy
# ---------------------------------------------------------------------------

def test_docstring_examples_run():
    import doctest

    for module in (crown, crown_sound, specification):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0


def _policy_cases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 0])
    same = lambda a, b: all(torch.equal(p, q) for p, q in zip(a, b))  # noqa: E731
    return {
        "crown_bounds eps": (lambda v: crown_bounds(model, x, v), "eps", 0.1, same),
        "crown_bounds crown-ibp eps": (lambda v: crown_bounds(model, x, v, method="crown-ibp"), "eps", 0.1, same),
        "crown_bounds sound eps": (lambda v: crown_bounds(model, x, v, sound=True), "eps", 0.1, same),
        "crown_bounds alpha_steps": (lambda v: crown_bounds(model, x, 0.1, method="alpha-crown", alpha_steps=v),
                                     "alpha_steps", 3, same),
        "crown_bounds alpha_lr": (lambda v: crown_bounds(model, x, 0.1, method="alpha-crown", alpha_lr=v),
                                  "alpha_lr", 0.1, same),
        "other_classes num_classes": (lambda v: specification.other_classes(y, v), "num_classes", 3, torch.equal),
        "certified_accuracy eps": (lambda v: crown.certified_accuracy(model, (x, y), v), "eps", 0.05, None),
        "certified_accuracy batch_size": (lambda v: crown.certified_accuracy(model, (x, y), 0.05, batch_size=v),
                                          "batch_size", 3, None),
    }


@pytest.mark.parametrize("case", list(_policy_cases()))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)
