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
are computed. The per-layer sound rules (an affine layer's ``gamma_n`` bound, an activation's
outward ends) live in the layer table, :mod:`course_lib.layers`, which builds on these primitives.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor


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
