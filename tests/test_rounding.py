"""Sound IBP in floating point (course_lib.rounding, ``ibp_bounds(..., sound=True)``).

The reference is the network's real arithmetic, approximated by float64 (a float32 network's
weights and inputs are exact in float64, and float64 rounding is 2**29 times finer than the
float32 bounds' slack). No tolerance: every float64 output at a sampled point or corner of the
real box must lie inside the sound float32 bounds.
"""

from __future__ import annotations

import copy
import itertools
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from course_lib import ibp, rounding
from strategies import random_case as _random_case

pytestmark = pytest.mark.certify


def _float32_case(seed):
    model64, x64, y, eps, g = _random_case(seed)
    model32 = copy.deepcopy(model64).float()
    model64 = copy.deepcopy(model32).double()  # the float32 weights, exactly
    x32 = x64.float()
    return model32, model64, x32, x32.double(), y, eps, g


def _real_box_points(x64, eps, g, count):
    """Points of the real box [x - eps, x + eps] clipped to [0, 1], in float64: random points,
    random corners and (for small inputs) every corner."""
    lo, hi = (x64 - eps).clamp(0, 1), (x64 + eps).clamp(0, 1)
    u = torch.rand(count, *x64.shape, generator=g, dtype=torch.float64)
    u[: count // 3] = u[: count // 3].round()
    points = [lo + u * (hi - lo), x64[None]]
    d = x64[0].numel()
    if d <= 8:
        signs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=d)), dtype=torch.float64)
        points.append(lo + signs.view(-1, 1, *x64.shape[1:]) * (hi - lo))
    return torch.cat(points)


@pytest.mark.parametrize("seed", range(40))
def test_sound_float32_bounds_contain_the_real_outputs(seed):
    model32, model64, x32, x64, y, eps, g = _float32_case(seed)
    lower, upper = ibp.ibp_bounds(model32, x32, eps, sound=True)
    margins = ibp.worst_case_margins(model32, x32, y, eps, sound=True)
    plain = ibp.worst_case_margins(model32, x32, y, eps, fold_last=False, sound=True)
    pts = _real_box_points(x64, eps, g, 600)
    with torch.no_grad():
        z = model64(pts.flatten(0, 1)).view(pts.shape[0], x64.shape[0], -1)
    assert (z >= lower.double()).all() and (z <= upper.double()).all()
    true_margin = z.gather(2, y.view(1, -1, 1).expand(z.shape[0], -1, 1)) - z
    for m in (margins, plain):
        m = m.double().scatter(1, y[:, None], -math.inf)
        assert (true_margin >= m).all()
    # the widening is tiny: sound bounds are the fast ones up to a relative 1e-3
    fast_lower, fast_upper = ibp.ibp_bounds(model32, x32, eps)
    scale = 1e-3 * (fast_upper.abs().max() + 1)
    assert (lower <= fast_lower).all() and (upper >= fast_upper).all()
    assert ((fast_lower - lower).max() <= scale) and ((upper - fast_upper).max() <= scale)


def test_without_outward_rounding_a_zero_width_box_misses_the_real_output():
    """At eps = 0 the fast bounds collapse onto the float32 forward pass, which rounds: across
    random networks some real (float64) output falls outside them; never outside the sound ones."""
    missed = 0
    for seed in range(40):
        model32, model64, x32, x64, y, _, _ = _float32_case(seed)
        fast = ibp.ibp_bounds(model32, x32, 0.0)
        sound = ibp.ibp_bounds(model32, x32, 0.0, sound=True)
        with torch.no_grad():
            z = model64(x64)
        missed += int(((z < fast[0].double()) | (z > fast[1].double())).any())
        assert (z >= sound[0].double()).all() and (z <= sound[1].double()).all()
    assert missed > 0


def test_certify_is_sound_by_default_and_agrees_with_the_fast_margins_away_from_zero():
    model32, _, x32, _, y, eps, _ = _float32_case(3)
    sound = ibp.worst_case_margins(model32, x32, y, eps, sound=True).min(1).values
    assert torch.equal(ibp.certify(model32, x32, y, eps), sound > 0)


def test_gamma_and_roundoff():
    assert rounding.unit_roundoff(torch.float32) == 2.0 ** -24
    assert rounding.gamma(10, torch.float64) == pytest.approx(10 * 2.0 ** -53)
    with pytest.raises(ValueError, match="too many"):
        rounding.gamma(10_000, torch.float16)


@pytest.mark.parametrize("value", [0.5, 0.1000001, 0.3, 1e-8, 0.99999994])
@pytest.mark.parametrize("eps", [0.1, 0.3, 1e-7, 2 / 255])
def test_the_box_contains_the_real_box(value, eps):
    """Exact rational arithmetic: lower <= max(x - eps, 0) and upper >= min(x + eps, 1), with x
    the float32 input and eps the Python float, both taken as exact rationals."""
    x = torch.tensor([[value]], dtype=torch.float32)
    lower, upper = rounding.box(x, eps, (0.0, 1.0))
    real_x, real_eps = Fraction(x.item()), Fraction(eps)
    assert Fraction(lower.item()) <= max(real_x - real_eps, Fraction(0))
    assert Fraction(upper.item()) >= min(real_x + real_eps, Fraction(1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sound_bounds_contain_the_real_outputs():
    model32, model64, x32, x64, y, eps, g = _float32_case(7)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.enabled
    lower, upper = ibp.ibp_bounds(model32.cuda(), x32.cuda(), eps, sound=True)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.enabled) == before  # restored
    pts = _real_box_points(x64, eps, g, 300)
    with torch.no_grad():
        z = model64(pts.flatten(0, 1)).view(pts.shape[0], x64.shape[0], -1)
    assert (z >= lower.cpu().double()).all() and (z <= upper.cpu().double()).all()


@pytest.mark.parametrize("setting", ["default", "medium", "high", "highest"])
def test_exact_kernels_turns_tf32_off_and_restores_the_users_setting(setting):
    """The flags are plain settings, so this runs without a GPU: inside, CUDA matrix products are
    IEEE float32 and cuDNN is off; afterwards the user's precision is back, readable through
    both APIs (a review found "medium" changed and get_float32_matmul_precision() raising)."""
    before_generic = torch.get_float32_matmul_precision()
    before_cuda = torch.backends.cuda.matmul.fp32_precision
    try:
        if setting != "default":
            torch.set_float32_matmul_precision(setting)
        generic, cuda = torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.fp32_precision
        with rounding.exact_kernels(torch.device("cuda")):
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
            assert not torch.backends.cudnn.enabled
        assert torch.get_float32_matmul_precision() == generic
        assert torch.backends.cuda.matmul.fp32_precision == cuda
        assert torch.backends.cudnn.enabled
    finally:
        torch.set_float32_matmul_precision(before_generic)
        torch.backends.cuda.matmul.fp32_precision = before_cuda


def test_sound_bounds_and_certificates_hold_with_subnormal_weights():
    """Where products underflow into subnormal numbers, relative error bounds say nothing: each
    product errs by up to half the smallest subnormal. A review built a false certificate so
    (two logits 2e-46 apart); the absolute underflow term closes it. Checked exactly (Fraction)."""
    tiny = rounding.smallest_subnormal(torch.float32)
    assert tiny == 2.0 ** -149
    g = torch.Generator().manual_seed(315)
    for trial in range(200):
        w0 = torch.randint(-1000, 1000, (16,), generator=g).float() * tiny
        W = torch.stack([w0, w0 + torch.randint(-3, 4, (16,), generator=g).float() * tiny])
        if trial % 2:
            W = torch.randn(2, 16, generator=g) * 4e-39
        x = torch.rand(1, 16, generator=g)
        model = nn.Sequential(nn.Linear(16, 2, bias=False))
        with torch.no_grad():
            model[0].weight.copy_(W)
        exact = [sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(row, x[0])) for row in W]
        with torch.no_grad():
            lower, upper = ibp.ibp_bounds(model, x, 0.0, sound=True)
        for k in range(2):
            assert Fraction(float(lower[0, k])) <= exact[k] <= Fraction(float(upper[0, k])), (trial, k)
        for y in (0, 1):
            if ibp.certify(model, x, torch.tensor([y]), 0.0):
                assert exact[y] > exact[1 - y], (trial, y)
