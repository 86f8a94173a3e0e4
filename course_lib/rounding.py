"""Outward rounding: interval bounds that stay sound in floating-point arithmetic.

IBP's algebra (:mod:`course_lib.ibp`) is exact over the reals, but a float32 matrix product
``W mu + b`` is off by up to ``gamma_n * (|W| |mu| + |b|)``, with ``n`` the number of terms
and ``gamma_n = n u / (1 - n u)``, ``u`` the unit roundoff (``2**-24`` in float32): the
classical bound for a sum computed in any order, with or without fused multiply-adds (Higham,
*Accuracy and Stability of Numerical Algorithms*, 2002, section 3.1). A margin certified at
1e-6 can therefore be wrong, and complete verifiers have been fooled exactly so (Jia and
Rinard 2021, "Exploiting verified neural networks via floating point numerical error").

Each function here widens what it computes by a provable bound on the rounding of that step,
so that the interval it returns contains the exact real interval: the centre keeps its
rounded value and the radius absorbs the error; a lower end is moved one floating-point number
down (``torch.nextafter``) and an upper end one up, which covers a correctly rounded
operation. The result: for every real input of the box, the network's *real-arithmetic* output
(with the stored weights) lies inside the bounds. The float forward pass of the model itself
rounds too; it can differ from the real output by about the same tiny amount.

GPU kernels that do not compute plain sums (TF32 tensor cores, Winograd and FFT convolutions)
break the ``gamma_n`` model, so :func:`exact_kernels` switches them off while sound bounds
are computed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u``: the largest relative error of one correctly rounded operation in ``dtype``."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """``gamma_n = n u / (1 - n u)``: the relative error bound of a sum of ``n`` products.

    Raises:
        ValueError: if ``n u >= 1/2`` (no useful bound: the dtype is too short for n terms).
    """
    nu = n * unit_roundoff(dtype)
    if nu >= 0.5:
        raise ValueError(f"{n} terms are too many for a rounding bound in {dtype}")
    return nu / (1 - nu)


def smallest_subnormal(dtype: torch.dtype) -> float:
    """The smallest positive subnormal number of ``dtype`` (``2**-149`` in float32)."""
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps


def down(t: Tensor) -> Tensor:
    """The next floating-point number below each element (covers a round-to-nearest error)."""
    return torch.nextafter(t, torch.tensor(-math.inf, dtype=t.dtype, device=t.device))


def up(t: Tensor) -> Tensor:
    """The next floating-point number above each element."""
    return torch.nextafter(t, torch.tensor(math.inf, dtype=t.dtype, device=t.device))


@contextlib.contextmanager
def exact_kernels(device: torch.device) -> Iterator[None]:
    """On CUDA, no TF32 matrix products and no cuDNN (Winograd, FFT) convolutions inside."""
    if device.type != "cuda":
        yield
        return
    # the backend's own setting, saved and restored through the same API: writing the legacy
    # allow_tf32 flag would turn a user's set_float32_matmul_precision("medium") into another
    # setting, and make get_float32_matmul_precision() raise afterwards
    previous = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        with torch.backends.cudnn.flags(enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.fp32_precision = previous


def box(x: Tensor, eps: float | Tensor, domain: tuple[float, float] | None) -> tuple[Tensor, Tensor]:
    """``[x - eps, x + eps]`` clipped to ``domain``, rounded outward (eps itself rounded up).

    ``eps`` is a number or a tensor broadcastable to x; x is assumed valid (checked by the caller).
    """
    e = torch.as_tensor(eps, dtype=torch.float64, device=x.device)
    e_x = e.to(x.dtype)
    e_x = torch.where(e_x.to(torch.float64) < e, up(e_x), e_x)  # never smaller than the real eps
    lower, upper = down(x - e_x), up(x + e_x)
    if domain is not None:
        lower, upper = lower.clamp(min=domain[0]), upper.clamp(max=domain[1])
    return lower, upper


def centre_radius(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """``(c, r)`` with ``[c - r, c + r]`` containing ``[lower, upper]`` exactly."""
    centre = torch.lerp(lower, upper, 0.5)
    return centre, up(torch.maximum(upper - centre, centre - lower))


def affine(layer: nn.Linear | nn.Conv2d, mu: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """A Linear or Conv2d layer on the box ``[mu - r, mu + r]``, radius widened for rounding.

    The real image is centred at ``W mu + b`` with radius ``|W| r``; the computed centre is off
    by at most ``g (|W| |mu| + |b|)``, ``g = gamma_(fan_in + 3)``. So the returned radius is
    ``(|W| (r + g |mu|) + e) (1 + 4 g) + 2 g |b|``: the factor and the doubled bias term absorb
    the rounding of computing the radius itself (a sum of non-negative terms, relative error
    <= g). The relative bounds fail where products underflow into subnormal numbers (each then
    errs by up to half the smallest subnormal ``s``, whatever its size), so
    ``e = 2 (fan_in + 3) (1 + max |W|) s`` adds that absolute error for the centre, the radius
    and the widened input; it is below 1e-40 in float32, and matters only for tiny weights.
    """
    W, b = layer.weight, layer.bias
    n = W[0].numel() + 3
    g = gamma(n, mu.dtype)
    widened = torch.add(r, mu.abs(), alpha=g)
    if isinstance(layer, nn.Linear):
        centre, radius = layer(mu), F.linear(widened, W.abs())
    else:
        centre = layer._conv_forward(mu, W, b)
        radius = layer._conv_forward(widened, W.abs(), None)
    underflow = 2 * n * smallest_subnormal(mu.dtype) * (1 + W.detach().abs().max())
    radius = (radius + underflow) * (1 + 4 * g)
    if b is not None:
        bias = b.abs() if isinstance(layer, nn.Linear) else b.abs().view(-1, 1, 1)
        radius = radius + 2 * g * bias
    return centre, radius


def monotone(layer: nn.Module, mu: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """A monotone activation on ``[mu - r, mu + r]``: the ends rounded outward, through the
    activation (ReLU is exact; sigmoid and tanh are widened by 16 ulps and kept in their range),
    back to a centre and radius that contain them."""
    lo, hi = layer(down(mu - r)), layer(up(mu + r))
    if not isinstance(layer, nn.ReLU):
        slack_lo = 8 * torch.finfo(lo.dtype).eps * lo.abs() + torch.finfo(lo.dtype).tiny
        slack_hi = 8 * torch.finfo(hi.dtype).eps * hi.abs() + torch.finfo(hi.dtype).tiny
        floor = 0.0 if isinstance(layer, nn.Sigmoid) else -1.0
        lo, hi = (lo - slack_lo).clamp(min=floor), (hi + slack_hi).clamp(max=1.0)
    return centre_radius(lo, hi)


def step(layer: nn.Module, mu: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """One supported layer (see :mod:`course_lib.ibp`) with outward rounding."""
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        return affine(layer, mu, r)
    if isinstance(layer, (nn.Flatten, nn.Identity)):
        return layer(mu), layer(r)  # exact: a reshape
    return monotone(layer, mu, r)


def folded_margins(W: Tensor, b: Tensor | None, y: Tensor, mu: Tensor, r: Tensor) -> Tensor:
    """Sound lower bounds on ``(w_y - w_j) . h + b_y - b_j`` over ``h in [mu - r, mu + r]``.

    The computed ``c = fl(w_y - w_j)`` is off by ``u |c|``; the two sums over H terms by
    ``g |c| . |mu|`` and ``g |c| . r``; the bias difference by ``u (|b_y| + |b_j|)``; and each
    product that underflows by half the smallest subnormal ``s`` (three sums of H products).
    The returned margins subtract twice the sum of these bounds and round down.

    Returns:
        (N, K) margins (the true class's column is not special-cased here).
    """
    g = gamma(W.shape[1] + 4, mu.dtype) + 2 * unit_roundoff(mu.dtype)
    c = W[y][:, None, :] - W[None, :, :]  # (N, K, H)
    c_abs = c.abs()
    margins = torch.einsum("nkh,nh->nk", c, mu) - torch.einsum("nkh,nh->nk", c_abs, r)
    scale = torch.einsum("nkh,nh->nk", c_abs, mu.abs() + r)
    if b is not None:
        margins = margins + (b[y][:, None] - b[None, :])
        scale = scale + (b[y].abs()[:, None] + b.abs()[None, :])
    underflow = 2 * (W.shape[1] + 4) * smallest_subnormal(mu.dtype)
    return down(margins - 2 * g * scale - underflow)
