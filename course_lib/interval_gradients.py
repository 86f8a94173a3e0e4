"""Sound interval arithmetic for gradients: per-example bounds on a cross-entropy gradient.

What :mod:`course_lib.certified_training` builds on. Every function takes intervals as
``(lower, upper)`` pairs of float64 tensors and returns an interval that contains the
*real-arithmetic* result for every choice of operands inside the operand intervals, although
it is computed in floating point: each step is widened by a provable bound on its own rounding
(:mod:`course_lib.rounding`).

* :func:`matmul`: ``A @ B`` for interval ``A``, ``B``, in centre/radius form: for
  ``A = Ac + dA``, ``|dA| <= Ar`` and ``B = Bc + dB``, ``|dB| <= Br``,
  ``|A B - Ac Bc| <= Ar (|Bc| + Br) + |Ac| Br`` (Rump 1999, "Fast and parallel interval arithmetic");
  the float result is then widened by ``gamma_n |Ac| |Bc|`` (the rounding of ``Ac @ Bc``, any
  summation order, Higham 2002, section 3.1) and the radius scaled up to cover its own rounding.
* :func:`mul`: the elementwise product from the four corners (exact over the reals, then one
  floating-point number outward).
* :func:`softmax`: ``s_j = 1 / (1 + sum_{i != j} exp(z_i - z_j))`` is increasing in ``z_j`` and
  decreasing in every other logit, so its ends come from the logits' ends. ``exp`` is not correctly
  rounded; it is assumed accurate to 1e-14 relative in float64 (glibc and SLEEF guarantee about
  1 ulp, 1.1e-16) and widened by that.
* :func:`example_gradients`: for a model ``nn.Linear`` or ``nn.Sequential(Linear, ReLU, Linear)``
  with parameters in a box, inputs in a box and a label, bounds on each example's gradient of the
  cross-entropy with respect to every parameter (interval forward pass through interval weights,
  then the interval backward pass: ``dL/dz = softmax(z) - onehot(y)``, through the transposed
  interval weights, ReLU's derivative in ``[1(l > 0), 1(u > 0)]``; PyTorch takes ``relu'(0) = 0``).

Shapes: ``n`` examples, ``d`` features, ``H`` hidden units, ``K`` classes. Computation is in
float64; on CUDA, call inside :func:`course_lib.rounding.exact_kernels`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from course_lib import rounding

Interval = tuple[Tensor, Tensor]
F64 = torch.float64
# relative accuracy assumed of torch.exp in float64 (about 90 ulps: a wide margin over 1 ulp)
EXP_ERROR = 1e-14


_INF: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}


def _infinities(t: Tensor) -> tuple[Tensor, Tensor]:
    key = (t.dtype, t.device)
    if key not in _INF:
        _INF[key] = (torch.tensor(-math.inf, dtype=t.dtype, device=t.device),
                     torch.tensor(math.inf, dtype=t.dtype, device=t.device))
    return _INF[key]


def down(t: Tensor) -> Tensor:
    """:func:`course_lib.rounding.down` (the next float below), without a new tensor per call."""
    return torch.nextafter(t, _infinities(t)[0])


def up(t: Tensor) -> Tensor:
    """:func:`course_lib.rounding.up` (the next float above), without a new tensor per call."""
    return torch.nextafter(t, _infinities(t)[1])


def gamma64(terms: int) -> float:
    """``gamma_terms`` in float64: the relative error bound of a sum of ``terms`` products."""
    return rounding.gamma(terms, F64)


def underflow_cover(terms: int) -> float:
    """An absolute error that covers ``terms`` results that underflow (each off by < 2**-1074)."""
    # 2**-960 keeps the covers themselves normal numbers: subnormal arithmetic is a hundred times slower
    return terms * 2.0 ** -960


def centre_radius(lower: Tensor, upper: Tensor) -> Interval:
    """``(c, r)`` with ``[c - r, c + r]`` containing ``[lower, upper]`` (r >= 0)."""
    centre = torch.lerp(lower, upper, 0.5)
    radius = torch.maximum(upper - centre, centre - lower)
    # a float difference is 0 only between equal numbers (gradual underflow): then 0 is exact,
    # and stays 0 rather than the subnormal up(0), which would slow every product it meets
    return centre, torch.where(radius > 0, up(radius), radius)


def matmul(A: Interval, B: Interval) -> Interval:
    """Sound bounds on ``A @ B`` for every real matrix ``A`` in ``[A[0], A[1]]``, ``B`` likewise.

    Args:
        A: ``(lower, upper)`` of shape (..., m, n) float64; a point when ``lower is upper``.
        B: ``(lower, upper)`` of shape (..., n, p) (broadcast as ``torch.matmul`` does).

    Returns:
        ``(lower, upper)`` of shape (..., m, p), containing the real products.
    """
    a_point, b_point = A[0] is A[1], B[0] is B[1]
    Ac, Ar = (A[0], None) if a_point else centre_radius(*A)
    Bc, Br = (B[0], None) if b_point else centre_radius(*B)
    n = Ac.shape[-1]
    m = Ac @ Bc
    abs_a, abs_b = Ac.abs(), Bc.abs()
    # the rounding of m: gamma_n |Ac| |Bc|; every term below is a sum of n >= 0 products
    r = gamma64(n) * (abs_a @ abs_b)
    if Ar is not None:
        r = r + Ar @ (abs_b if Br is None else up(abs_b + Br))
    if Br is not None:
        r = r + abs_a @ Br
    # each computed non-negative sum is at least (1 - gamma_{n+4}) times the real one
    r = up(r * (1 + 4 * gamma64(n + 4)) + underflow_cover(4 * (n + 4)))
    return down(m - r), up(m + r)


def mul(A: Interval, B: Interval) -> Interval:
    """The elementwise product of two intervals (broadcasting), from the corners.

    ``B`` is a point when ``B[0] is B[1]``: then two corners suffice."""
    if B[0] is B[1]:
        p, q = A[0] * B[0], A[1] * B[0]
        return down(torch.minimum(p, q)), up(torch.maximum(p, q))
    p, q, r, s = A[0] * B[0], A[0] * B[1], A[1] * B[0], A[1] * B[1]
    lower = torch.minimum(torch.minimum(p, q), torch.minimum(r, s))
    upper = torch.maximum(torch.maximum(p, q), torch.maximum(r, s))
    return down(lower), up(upper)


def add(A: Interval, B: Interval) -> Interval:
    """``A + B`` elementwise (broadcasting), rounded outward."""
    return down(A[0] + B[0]), up(A[1] + B[1])


def sum_upper(t: Tensor, dim: int = 0) -> Tensor:
    """An upper bound on the real sum of ``t`` along ``dim``: ``fl(sum) + gamma |t|``-sum, rounded up."""
    m = t.shape[dim]
    g = 2 * gamma64(m + 2)
    return up(t.sum(dim) + (g * t.abs().sum(dim) + underflow_cover(m)))


def sum_lower(t: Tensor, dim: int = 0) -> Tensor:
    """A lower bound on the real sum of ``t`` along ``dim``."""
    return -sum_upper(-t, dim)


def softmax(z: Interval) -> Interval:
    """Bounds on ``softmax(z)`` along the last dimension over the logit box ``z``; inside [0, 1]."""
    zl, zu = z
    K = zl.shape[-1]
    off = ~torch.eye(K, dtype=torch.bool, device=zl.device)  # off[j, i]: i != j
    # lower end of s_j: other logits at their top, z_j at its bottom
    d_hi = up(zu.unsqueeze(-2) - zl.unsqueeze(-1))  # (..., j, i): z_i^U - z_j^L
    d_lo = down(zl.unsqueeze(-2) - zu.unsqueeze(-1))
    e_hi = up(torch.exp(d_hi) * (1 + 2 * EXP_ERROR) + underflow_cover(2))
    e_lo = down(torch.exp(d_lo) * (1 - 2 * EXP_ERROR)).clamp(min=0)
    zero = torch.zeros((), dtype=zl.dtype, device=zl.device)
    s_hi = sum_upper(torch.where(off, e_hi, zero), -1)
    s_lo = sum_lower(torch.where(off, e_lo, zero), -1).clamp(min=0)
    one = torch.ones((), dtype=zl.dtype, device=zl.device)
    lower = down(one / up(1 + s_hi)).clamp(0, 1)  # 1 / inf = 0: still sound
    upper = up(one / down(1 + s_lo)).clamp(0, 1)
    return lower, upper


def affine(x: Interval, W: Interval, b: Interval) -> Interval:
    """``x @ W.T + b``: x (n, in), W (out, in), b (out,), all intervals."""
    return add(matmul(x, (W[0].T, W[1].T) if W[0] is not W[1] else (W[0].T,) * 2), b)


def relu_derivative_times(g: Interval, h: Interval) -> Interval:
    """Bounds on ``g * relu'(h)`` (``relu'(h) = 1`` if h > 0 else 0) for g, h in their intervals.

    Exact: the result is g where h is surely positive, 0 where surely not, and the hull of g
    and 0 where the sign is uncertain; no rounding happens."""
    on, maybe = h[0] > 0, h[1] > 0
    zero = torch.zeros((), dtype=g[0].dtype, device=g[0].device)
    lower = torch.where(on, g[0], torch.where(maybe, g[0].clamp(max=0), zero))
    upper = torch.where(on, g[1], torch.where(maybe, g[1].clamp(min=0), zero))
    return lower, upper


def forward(params: list[Interval], x: Interval) -> tuple[Interval, list[Interval]]:
    """The interval forward pass; returns the logit box (n, K) and the saved boxes for backward.

    ``params`` holds ``[W, b]`` (linear) or ``[W1, b1, W2, b2]`` (one hidden ReLU layer)."""
    if len(params) == 2:
        return affine(x, params[0], params[1]), [x]
    h = affine(x, params[0], params[1])
    a = (h[0].clamp(min=0), h[1].clamp(min=0))  # ReLU is monotone and exact
    return affine(a, params[2], params[3]), [x, h, a]


def _row(v: Interval) -> Interval:
    """``v`` (n, m) as (n, 1, m), a point staying a point (one tensor twice)."""
    lo = v[0].unsqueeze(-2)
    return (lo, lo) if v[0] is v[1] else (lo, v[1].unsqueeze(-2))


def backward(params: list[Interval], saved: list[Interval], delta: Interval) -> list[Interval]:
    """Per-example gradient bounds from ``delta``, the box of ``dL/dz`` (n, K).

    Returns one interval per parameter, of shape (n, *parameter.shape)."""
    out = (delta[0].unsqueeze(-1), delta[1].unsqueeze(-1))
    grads_last = [mul(out, _row(saved[-1])), delta]
    if len(params) == 2:
        return grads_last
    x, h, _ = saved
    W2 = params[2]
    g_a = matmul(delta, W2)  # (n, K) @ (K, H): dL/da
    g_h = relu_derivative_times(g_a, h)
    g_W1 = mul((g_h[0].unsqueeze(-1), g_h[1].unsqueeze(-1)), _row(x))
    return [g_W1, g_h] + grads_last


def example_gradients(params: list[Interval], x: Interval, labels: list[int] | None,
                      y: Tensor) -> list[Interval]:
    """Bounds on each example's cross-entropy gradient over the parameter and input boxes.

    Args:
        params: intervals of the parameters in ``model.parameters()`` order, float64.
        x: the input box (n, d), float64; a point when ``x[0] is x[1]``.
        labels: ``None``: the label is ``y``; a list of classes: the bound holds for every label
            in it (the hull over them; a label flip).
        y: int64 labels (n,).

    Returns:
        One ``(lower, upper)`` per parameter, shape (n, *parameter.shape).
    """
    z, saved = forward(params, x)
    s = softmax(z)
    K = s[0].shape[-1]
    hull: list[Interval] | None = None
    for label in ([None] if labels is None else labels):
        target = torch.nn.functional.one_hot(y if label is None else torch.full_like(y, label), K).to(F64)
        delta = (down(s[0] - target), up(s[1] - target))
        grads = backward(params, saved, delta)
        hull = grads if hull is None else [(torch.minimum(a[0], b[0]), torch.maximum(a[1], b[1]))
                                           for a, b in zip(hull, grads)]
    return hull
