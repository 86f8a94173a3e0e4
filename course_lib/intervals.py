"""Interval arithmetic's helpers: checked intervals, one-layer rules, and the clipped eps-box.

:mod:`course_lib.ibp` holds the reference algorithm of lecture 4; this module holds what it
builds on: :func:`interval_monotone` (sigmoid, tanh) and :func:`interval_conv2d` for one layer,
and :func:`input_box`, the L-inf box ``[x - eps, x + eps]`` clipped to the data's range, the
set :mod:`course_lib.ibp` bounds the network over; the private helpers check intervals and
radii for every function there, and give the box's centre and radius in as few passes over
memory as it takes (the fast path of IBP's first step).

Examples:
    >>> lower, upper = input_box(torch.tensor([[0.05, 0.5]]), 0.1)
    >>> [round(v, 2) for v in lower[0].tolist() + upper[0].tolist()]
    [0.0, 0.4, 0.15, 0.6]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from course_lib import _checks, layers

Interval = tuple[Tensor, Tensor]


def as_tensor(value, name: str, like: Tensor | None = None) -> Tensor:
    if isinstance(value, Tensor):
        t = value
    else:  # a number (Python, NumPy); bools, strings and nan are refused, naming the argument
        t = torch.tensor(_checks.number(value, name, finite=False),
                         dtype=torch.float64 if like is None else like.dtype,
                         device=None if like is None else like.device)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype() if like is None else like.dtype)
    return t


def check_interval(lower: Tensor, upper: Tensor) -> None:
    if lower.shape != upper.shape:
        raise ValueError(f"lower and upper must have the same shape, got {tuple(lower.shape)} and {tuple(upper.shape)}")
    if torch.isnan(lower).any() or torch.isnan(upper).any():
        raise ValueError("lower and upper must not contain nan")
    if (lower > upper).any():
        gap = (lower - upper).max().item()
        raise ValueError(f"need lower <= upper elementwise; lower exceeds upper by up to {gap:.3g}")


def interval_monotone(lower, upper, fn: Callable[[Tensor], Tensor]) -> Interval:
    """The interval image ``[fn(lower), fn(upper)]`` under a non-decreasing elementwise ``fn``.

    Args:
        lower, upper: numbers or tensors of one shape, ``lower <= upper``.
        fn: elementwise and non-decreasing (ReLU, sigmoid, tanh, ...); not checked.

    Returns:
        ``(fn(lower), fn(upper))``, tensors of the input shape.

    Raises:
        ValueError: for mismatched shapes, ``lower > upper`` or nan.
    """
    like = lower if isinstance(lower, Tensor) else upper if isinstance(upper, Tensor) else None
    lower, upper = as_tensor(lower, "lower", like), as_tensor(upper, "upper", like)
    check_interval(lower, upper)
    return fn(lower), fn(upper)


def interval_sigmoid(lower, upper) -> Interval:
    """``[sigmoid(lower), sigmoid(upper)]``: see :func:`interval_monotone`."""
    return interval_monotone(lower, upper, torch.sigmoid)


def interval_tanh(lower, upper) -> Interval:
    """``[tanh(lower), tanh(upper)]``: see :func:`interval_monotone`."""
    return interval_monotone(lower, upper, torch.tanh)


def interval_conv2d(lower: Tensor, upper: Tensor, conv: nn.Conv2d) -> Interval:
    """The interval image of a box of images under ``conv`` (centre/radius with ``|W|``).

    Args:
        lower, upper: (N, C_in, H, W) with ``lower <= upper``.
        conv: an ``nn.Conv2d`` (any stride, padding, padding mode, dilation, groups).

    Returns:
        ``(lower', upper')`` of shape ``conv(lower).shape``: the tightest box with zero padding;
        with another padding mode, a sound box that can be looser (an input copied into the
        padding can meet one kernel window twice).

    Raises:
        ValueError: for mismatched shapes, ``lower > upper`` or nan.
    """
    check_interval(lower, upper)
    mu, r = layers.interval_step(conv, (upper + lower) / 2, (upper - lower) / 2)
    return mu - r, mu + r


def input_box(x: Tensor, eps: float | Tensor, *, domain: tuple[float, float] | None = (0.0, 1.0)) -> Interval:
    """The L-inf box ``[x - eps, x + eps]`` clipped to ``domain``.

    Args:
        x: a batch of inputs (N, ...), inside ``domain``.
        eps: a number >= 0, or a tensor (N,) of per-example radii >= 0.
        domain: the data's range (default [0, 1], images); ``None``: no clipping.

    Returns:
        ``(lower, upper)`` of x's shape, dtype and device.

    Raises:
        ValueError: for eps < 0, nan or of the wrong shape, or x outside ``domain``.
    """
    return _clipped_box(x, checked_eps(x, eps, domain), domain)


# ---------------------------------------------------------------------------
# Fast paths: the box's centre and radius in few passes, in place where the tensors are ours
# ---------------------------------------------------------------------------

def _clipped_box(x: Tensor, eps: float | Tensor, domain: tuple[float, float] | None) -> Interval:
    """:func:`input_box` for an eps that :func:`checked_eps` has already checked."""
    if isinstance(eps, Tensor):
        eps = eps.to(x.dtype)
    if domain is None:
        return x - eps, x + eps
    return torch.sub(x, eps).clamp_(min=domain[0]), torch.add(x, eps).clamp_(max=domain[1])


def checked_eps(x: Tensor, eps: float | Tensor, domain: tuple[float, float] | None) -> float | Tensor:
    """Check x, eps and domain (see :func:`input_box`); returns eps as a number, or as a tensor
    of shape (N, 1, ...) on x's device in eps's own dtype (the sound box rounds it itself)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty floating-point batch (N, ...), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if isinstance(eps, Tensor) and eps.ndim > 0:
        if eps.shape != (x.shape[0],):
            raise ValueError(f"eps must be a number or a tensor of shape ({x.shape[0]},), got shape {tuple(eps.shape)}")
        if torch.isnan(eps).any() or (eps < 0).any():
            raise ValueError(f"eps must be >= 0 for every example, got min {eps.min().item():.3g}")
        eps = eps.to(device=x.device).view(-1, *([1] * (x.ndim - 1)))
    else:  # a number: Python, NumPy or a 0-d tensor; bools, strings, nan and inf refused
        eps = _checks.number(eps, "eps", ge=0)
    if domain is not None:
        lo, hi = domain
        x_lo, x_hi = (v.item() for v in torch.aminmax(x.detach()))  # one pass; plain floats compare fastest
        if not (x_lo >= lo and x_hi <= hi):  # also catches nan
            raise ValueError(f"x must lie in the domain [{lo}, {hi}] (got values in [{x_lo:.3g}, {x_hi:.3g}]); "
                             "undo normalization first, or pass domain=None")
    return eps


def centre_radius(lower: Tensor, upper: Tensor, *, owned: bool = False) -> Interval:
    """``((lower + upper) / 2, (upper - lower) / 2)`` in two passes (lower <= upper is not checked).

    Overwrites ``lower`` and ``upper`` when ``owned`` and no gradient flows through them: a fresh
    input-sized tensor costs a page fault per 4 kB on a CPU, more than the arithmetic."""
    if owned and not (lower.requires_grad or upper.requires_grad):
        centre = lower.lerp_(upper, 0.5)
        return centre, upper.sub_(centre)
    centre = torch.lerp(lower, upper, 0.5)
    return centre, upper - centre


def box_centre_radius(x: Tensor, eps: float | Tensor, domain: tuple[float, float] | None) -> Interval:
    """Centre and radius of :func:`input_box` (x and eps checked), in as few passes as it takes.

    With a number eps at most half the domain's width [a, b], the clipped box
    ``[max(x - eps, a), min(x + eps, b)]`` has centre ``(x + clamp(x, a + eps, b - eps)) / 2``
    (x itself away from the edges, halfway to the inner edge near them) and radius
    ``min(x + eps, b) - centre``: four passes over the input instead of six, which is most of
    what IBP costs beyond its two matrix products on a small MLP. That form is used when no
    gradient is recorded (certification, evaluation); under autograd (IBP training) the box is
    built end by end, so that a trained model does not depend on this speed-up's rounding."""
    checked = checked_eps(x, eps, domain)
    if (domain is None or isinstance(checked, Tensor) or torch.is_grad_enabled()
            or not 2 * checked <= domain[1] - domain[0]):
        return centre_radius(*_clipped_box(x, checked, domain), owned=True)
    a, b = domain
    centre = torch.clamp(x, a + checked, b - checked).lerp_(x, 0.5)
    return centre, torch.add(x, checked).clamp_(max=b).sub_(centre)
