"""Bounds on a batch's mean gradient when up to k of its examples are poisoned: two ways.

:func:`reference_descent_bounds` is the theorem of :mod:`course_lib.certified_training` written
out: per-example gradient boxes (:func:`course_lib.interval_gradients.example_gradients`), the
clean boxes summed, the k largest poisoned excesses added. It holds (n, P) tensors of every kind
for every parameter and costs some forty passes over them.

:func:`descent_bounds` computes the same kind of bound with the same theorem, faster:

* the per-example clean box of a weight gradient ``delta_i x_i^T`` is taken in centre/radius
  form, ``U_i = c_i x_i^T + |c_i| r_i^T + rho_i s_i^T`` (``delta_i`` in ``c_i +- rho_i``,
  ``x_i`` in ``x_i^c +- r_i``, ``s_i >= |x_i^c| + r_i``; Rump's product bound), whose sum over
  the batch is three matrix products: no per-example tensor;
* the poisoned excess ``Q_i - U_i`` (and ``P_i - L_i``) is one batched product of (n, m, 6) by
  (n, 6, d), one pass over the (n, m, d) result, then clamped and its top k taken;
* the rounding of those products is bounded once per parameter, a priori:
  ``gamma_8 * sum_t max_i |left_t| max_i |right_t|`` per element, k times for the top k.

Both are sound for the real-arithmetic gradients. Label flips: the hull over every label of each
layer's output-gradient box. Biases (small, (n, m)) use the per-example rule of the reference.
The fast path is a little looser than the reference (Rump's product bound against four corners:
at most 1.5 times as wide per product) and needs about a third of its time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from course_lib import _checks
from course_lib import interval_gradients as ig
from course_lib import rounding

Interval = tuple[Tensor, Tensor]
F64 = torch.float64


def check_budget(k, eps, label_flip, num_classes) -> tuple[int, float, bool, int]:
    """The poisoning budget checked (errors name the argument): k >= 0, eps >= 0, K >= 2."""
    return (_checks.integer(k, "k", ge=0), _checks.number(eps, "eps", ge=0),
            _checks.flag(label_flip, "label_flip"), _checks.integer(num_classes, "num_classes", ge=2))


def reference_descent_bounds(params: list[Interval], X: Tensor, y: Tensor, *, k: int, eps: float,
                             label_flip: bool, num_classes: int) -> list[Interval]:
    """The theorem's bound from per-example gradient boxes (the slow reference); see the module."""
    k, eps, label_flip, num_classes = check_budget(k, eps, label_flip, num_classes)
    point = (X, X)
    clean = ig.example_gradients(params, point, None, y)
    poisoned = None
    if k > 0 and (eps > 0 or label_flip):
        box = rounding.box(X, eps, None) if eps > 0 else point
        poisoned = ig.example_gradients(params, box, list(range(num_classes)) if label_flip else None, y)
    return combine(clean, poisoned, k)


def combine(clean: list[Interval], poisoned: list[Interval] | None, k: int) -> list[Interval]:
    """``(sum_i L_i + k smallest (P_i - L_i)) / n`` and ``(sum_i U_i + k largest (Q_i - U_i)) / n``.

    ``clean``, ``poisoned``: per-example boxes (n, ...) per parameter; differences clamped at 0
    (the hull of clean and poisoned)."""
    n = clean[0][0].shape[0]
    k = min(k, n)
    out = []
    for i, (lo, hi) in enumerate(clean):
        if poisoned is not None and k > 0:
            d_lo = ig.down(poisoned[i][0] - lo).clamp(max=0)
            d_hi = ig.up(poisoned[i][1] - hi).clamp(min=0)
            lo = torch.cat([lo, torch.topk(d_lo, k, dim=0, largest=False).values])
            hi = torch.cat([hi, torch.topk(d_hi, k, dim=0).values])
        out.append((ig.down(ig.sum_lower(lo) / n), ig.up(ig.sum_upper(hi) / n)))
    return out


# ---------------------------------------------------------------------------
# The fast path
# ---------------------------------------------------------------------------

def _layer_boxes(params: list[Interval], x: Interval, y: Tensor, labels_any: bool) -> list[tuple[Interval, Interval]]:
    """(output-gradient box (n, m), input box (n, d)) of each linear layer, first layer first.

    With ``labels_any`` the output-gradient boxes are the hull over every label y' of
    ``softmax - onehot(y')`` pushed back, layer by layer: as tight as the hull of the
    per-example gradient boxes, since a product of intervals is monotone under inclusion."""
    z, saved = ig.forward(params, x)
    s_lo, s_hi = ig.softmax(z)
    K = s_lo.shape[-1]
    hull: list[Interval] | None = None
    for label in (range(K) if labels_any else [None]):
        target = torch.nn.functional.one_hot(y if label is None else torch.full_like(y, label), K).to(F64)
        delta = (ig.down(s_lo - target), ig.up(s_hi - target))
        if len(params) == 2:
            boxes = [delta]
        else:
            boxes = [ig.relu_derivative_times(ig.matmul(delta, params[2]), saved[1]), delta]
        hull = boxes if hull is None else [(torch.minimum(a[0], b[0]), torch.maximum(a[1], b[1]))
                                           for a, b in zip(hull, boxes)]
    inputs = [saved[0]] if len(params) == 2 else [saved[0], saved[2]]
    return list(zip(hull, inputs))


def _centre_radius(v: Interval) -> tuple[Tensor, Tensor | None]:
    """``(c, r)`` with ``c +- r`` covering ``v``; a point gives ``r = None``."""
    if v[0] is v[1]:
        return v[0], None
    return ig.centre_radius(*v)


def _abs_plus(c: Tensor, r: Tensor | None) -> Tensor:
    """``s >= |c| + r`` as a float tensor (``|c|`` when r is None)."""
    return c.abs() if r is None else ig.up(c.abs() + r)


def _sum_outer(g: tuple[Tensor, Tensor], x: tuple[Tensor, Tensor | None]) -> Interval:
    """Enclosure of ``sum_i (c_i x_i^T -+ (|c_i| r_i^T + rho_i s_i^T))`` (m, d): the clean sums."""
    (c, rho), (xc, xr) = g, x
    n = c.shape[0]
    gam = ig.gamma64(n + 4)
    centre = c.T @ xc
    # covers the rounding of centre (gamma_n |c|^T |xc|) and the radius terms
    t = ig.up(gam * xc.abs()) if xr is None else ig.up(xr + ig.up(gam * xc.abs()))
    radius = c.abs().T @ t + rho.T @ _abs_plus(xc, xr)
    radius = ig.up(radius * (1 + 4 * gam) + ig.underflow_cover(4 * (n + 4)))
    return ig.down(centre - radius), ig.up(centre + radius)


def _excess(g: tuple[Tensor, Tensor], x: tuple[Tensor, Tensor | None], gp: tuple[Tensor, Tensor],
            xp: tuple[Tensor, Tensor | None], k: int) -> Interval:
    """Bounds on the sum of the k most negative (P_i - L_i) and k largest (Q_i - U_i), (m, d)."""
    (c, rho), (xc, xr) = g, x
    (cp, rhop), (xcp, xrp) = gp, xp
    left, r_hi = [cp, c, rhop, rho], [xcp, -xc, _abs_plus(xcp, xrp), -_abs_plus(xc, xr)]
    if xrp is not None:
        left.append(cp.abs())
        r_hi.append(xrp)
    if xr is not None:
        left.append(c.abs())
        r_hi.append(-xr)
    left_t = torch.stack(left, -1)  # (n, m, t)
    right_hi = torch.stack(r_hi, -2)  # (n, t, d)
    sign = torch.tensor([1.0, 1.0] + [-1.0] * (len(r_hi) - 2), dtype=F64, device=c.device).view(1, -1, 1)
    r_lo = right_hi * sign  # the radius terms change sign for the lower side; exact
    hi = torch.bmm(left_t, right_hi).clamp_(min=0)
    lo = torch.bmm(left_t, r_lo).clamp_(max=0)
    # a-priori rounding bound per element (t terms, each product and sum rounded; inputs exact)
    err = ig.up(ig.gamma64(len(r_hi) + 2) * (left_t.abs().amax(0) @ right_hi.abs().amax(0)) * (1 + 1e-10)
                + ig.underflow_cover(2 * len(r_hi) + 4))
    kk = min(k, c.shape[0])
    top_hi, top_lo = top_k_sum(hi, kk), top_k_sum(lo, kk, largest=False)
    slack = 2 * ig.gamma64(2 * kk + 2)
    top_hi = ig.up(top_hi * (1 + slack) + ig.up(kk * err))
    top_lo = ig.down(top_lo * (1 + slack) - ig.up(kk * err))
    return top_lo, top_hi


def top_k_sum(x: Tensor, k: int, *, largest: bool = True) -> Tensor:
    """The float sum of the k largest (or smallest) entries of ``x`` (n, ...) along dim 0, 1 <= k <= n."""
    if k == 1:
        return x.amax(0) if largest else x.amin(0)
    return torch.topk(x, k, dim=0, largest=largest, sorted=False).values.sum(0)


def descent_bounds(params: list[Interval], X: Tensor, y: Tensor, *, k: int, eps: float,
                   label_flip: bool, num_classes: int) -> list[Interval]:
    """Bounds on the batch's mean gradient over the parameter box and every poisoning of at most
    k examples (features within eps, any label if ``label_flip``); one interval per parameter.

    Args:
        params: the parameter box, float64, ``[W, b]`` or ``[W1, b1, W2, b2]``.
        X: the batch (n, d) float64; y: int64 labels (n,). k >= 0, eps >= 0, num_classes: K.
    """
    k, eps, label_flip, num_classes = check_budget(k, eps, label_flip, num_classes)
    n = len(y)
    point = (X, X)
    layers = _layer_boxes(params, point, y, False)
    poison = k > 0 and (eps > 0 or label_flip)
    if poison:
        box = rounding.box(X, eps, None) if eps > 0 else point
        layers_p = _layer_boxes(params, box, y, label_flip)
        e = ig.up(torch.tensor(eps, dtype=F64)).item() if eps > 0 else None
    out: list[Interval] = []
    for j, (g, x) in enumerate(layers):
        gcr = ig.centre_radius(*g)
        xcr = _centre_radius(x)
        w_lo, w_hi = _sum_outer(gcr, xcr)
        b_clean = [g]
        if poison:
            gp, xp = layers_p[j]
            # the first layer's poisoned input: the float x, radius eps rounded up (covers the box)
            xpcr = (X, torch.full_like(X, e)) if j == 0 and e is not None else _centre_radius(xp)
            e_lo, e_hi = _excess(gcr, xcr, ig.centre_radius(*gp), xpcr, k)
            w_lo, w_hi = ig.down(w_lo + e_lo), ig.up(w_hi + e_hi)
            (b_lo, b_hi), = combine(b_clean, [gp], k)
        else:
            (b_lo, b_hi), = combine(b_clean, None, k)
        out += [(ig.down(w_lo / n), ig.up(w_hi / n)), (b_lo, b_hi)]
    return out
