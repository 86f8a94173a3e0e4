"""Sound CROWN: the backward pass of :mod:`course_lib.crown` with its rounding accounted for.

``crown_bounds(..., sound=True)`` makes the claim of ``ibp_bounds(..., sound=True)``: for every
real input x' of the L-inf ball of radius eps around x clipped to [0, 1], the network evaluated
in exact real arithmetic (with the stored weights) gives ``lower <= C z_m(x') <= upper``, although
the bounds are computed in floating point. Assumptions, as for sound IBP
(:mod:`course_lib.rounding`): IEEE arithmetic rounding to nearest, gradual underflow (no flush to
zero), matrix products and convolutions computed as plain sums of products in some order
(:func:`course_lib.rounding.exact_kernels` on CUDA).

The pass runs in float64 whatever x's dtype (:func:`in_float64`: float32, float16 and bfloat16
numbers are exact in float64, so it is the same real network), and its bounds are rounded
outward to x's dtype at the end (:func:`round_to`). In float32 itself the error terms below,
``n u |A| |W| |z|`` against a bound's width of about ``eps |A W|``, would widen a small MNIST
CNN's CROWN bounds at eps = 0.01 by more than a third; in float64 the widening is below
float32's own rounding of the result.

Notation: ``u`` the unit roundoff and ``s`` the smallest subnormal of the working dtype,
``g_n = n u / (1 - n u)``, ``|v|`` the number of entries of v, ``fl`` a computed value. A
correctly rounded operation lies between the neighbours of its result:
``down(fl(a op b)) <= a op b <= up(fl(a op b))`` (:func:`course_lib.rounding.down`, ``up``).

*Lemma 1* (Higham 2002, section 3.1, with underflow). A sum of products ``p_i = a_i b_i`` of
floats, computed so that each term meets at most n roundings (any order or tree, fused
multiply-adds or not, partial sums multiplied later), is off by at most ``g_n sum |p_i| + n s``:
each multiplication gives ``x (1 + d) + e``, ``|d| <= u``, ``|e| <= s / 2``, each addition
``x (1 + d)``; exact zeros add nothing. *Lemma 2* (from 1). If the ``p_i`` are >= 0 and
``e = fl(sum p_i)`` (D products), then ``sum p_i <= (e + D s) / (1 - g_D)``.

*The invariant.* The pass holds floats ``(A, c)`` with ``C z_m >= A z_k + c`` (each row) for
every real execution from the ball; it starts with ``A = C`` (exact in float64), ``c = 0``,
``k = m``. A step through ``z_k = f(z_{k-1})`` computes ``A'`` and ``beta`` such that, with
``zmax >= |z_{k-1}|`` from sound boxes (below), some ``V >= 0`` of z_k's shape and some n,
``A z_k >= A' z_{k-1} + beta - err``, ``err <= g_n sum_i |A_i| V_i + n s (sum_j zmax_j + 1)``:

* affine, ``z_k = W z_{k-1} + b``: ``A z_k = A' z + (A W - A') z + A b`` exactly, where
  ``A' = fl(A W)`` and ``beta = fl(A b)`` are sums whose terms meet at most n roundings
  (:func:`terms`); by Lemma 1, ``|(A W - A') z| <= g_n |A| (|W| zmax) + n s sum zmax`` and
  ``|beta - A b| <= g_n |A| |b| + n s``. So ``V = up(R + |b|)``, ``R`` the radius of the box
  ``[-zmax, zmax]`` by the table's sound rule (:mod:`course_lib.layers`), which is >= the
  real ``|W| zmax`` (the sum over every product of a padded convolution);
* ReLU, with lines ``a_lo z <= relu(z) <= a_hi z + b_hi`` valid in reals on ``[l, u]``,
  slopes in [0, 1] (:func:`relu_lines`): ``A relu(z) >= (A+ a_lo + A- a_hi) z + A- b_hi``
  exactly; each entry of ``A'`` is one rounded product, off by ``<= u |A_j| + s / 2``, and
  ``beta`` a sum of ``|z|`` products: ``V = up(zmax + |b_hi|)``, ``n = |z|``;
* Flatten and Identity: ``A`` reshaped, exact (``err = 0``).

Then ``c' = down(down(c + beta) - slack)``, ``slack = up(up(G e) + T)``, with
``e = fl(sum_i |A_i| V_i)`` (``D = |z_k|`` products), ``m = max(n, D)``, ``m u <= 1/4`` (so
``g_m <= 1/3``), ``G >= 2 g_m`` (computed up, with a margin for Python's own rounding) and
``T >= s (D + n (|z_{k-1}| max(zmax) + 1))``. By Lemma 2 and ``g_n / (1 - g_D) <= 2 g_m <= G <= 1``,
``err <= G e + G D s + n s (sum zmax + 1) <= slack``, so ``(A', c')`` keeps the invariant.
At the input, the minimum of ``A x`` over the float box ``[lo, hi]`` (:func:`course_lib.rounding.box`,
which contains the real ball) is ``sum A+ lo + A- hi``, computed as two sums added (``|x| + 1``
roundings per term): the same slack with ``V = max(|lo|, |hi|)``, ``n = |x| + 1``. A result that
overflowed (inf or nan) becomes -inf. Upper bounds are ``-`` the lower bounds of ``-C``.

*The lines.* relu is convex, so a line is above it on ``[l, u]`` iff it is above it at ``l``
and at ``u``. ``a_hi = fl(u / fl(u - l))`` lies in ``(0, 1]`` (``fl`` is monotone and
``u - l > u``); ``b_hi = max(up(a_hi (-l)), up(u - down(a_hi u)))`` makes ``a_hi l + b_hi >= 0``
and ``a_hi u + b_hi >= u``. Any ``alpha`` in [0, 1] gives ``alpha z <= relu(z)`` everywhere;
stable units are exact (slope 1 and 0, or 0 and 0).

*The boxes.* ``zmax`` comes from sound IBP (the table's sound rules); with ``method="crown"``
each ReLU's box is intersected with its sound CROWN bounds (both contain the real values) before
the next layers. The lines use the pre-activation bounds alone (sound CROWN recursively, or
sound IBP for ``"crown-ibp"``), as the plain pass does, so that the sound bounds enclose the plain
ones computed in float64.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from course_lib import layers, rounding
from course_lib.specification import identity_spec

SUPPORTED = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Identity)


def check_layers(sequence: list[nn.Module]) -> None:
    """Refuse a layer the sound pass has no error bound for (the rounding of its transpose).

    Raises:
        TypeError: naming the first such layer and its index.
    """
    for i, layer in enumerate(sequence):
        if not isinstance(layer, SUPPORTED):
            names = ", ".join(t.__name__ for t in SUPPORTED)
            raise TypeError(f"sound CROWN supports {names}; not layer {i} ({type(layer).__name__}: {layer})")


def in_float64(layer: nn.Module) -> nn.Module:
    """``layer`` with float64 parameters: a shallow copy holding differentiable (and exact) casts
    of its own, or the layer itself when it has none or they are float64 already."""
    params = dict(layer.named_parameters(recurse=False))
    if all(p.dtype == torch.float64 for p in params.values()):
        return layer
    clone = copy.copy(layer)
    clone._parameters = {}  # the copy's own table: the casts are plain attributes of the copy
    for name, p in layer._parameters.items():
        setattr(clone, name, None if p is None else p.to(torch.float64))
    return clone


def round_to(t: Tensor, dtype: torch.dtype) -> Tensor:
    """Lower bounds ``t`` (float64) as ``dtype``, rounded down: each result <= its float64 value."""
    r = t.to(dtype)
    return torch.where(r.to(t.dtype) > t, rounding.down(r), r)


def terms(layer: nn.Module, out_shape: tuple[int, ...]) -> int:
    """The most roundings one term meets in ``A W`` or ``A . b`` for an affine layer (Lemma 1).

    Linear: an entry of ``A W``, and ``A . b``, sum ``out_features`` products. Conv2d: an input
    meets each output channel of its group once per kernel offset and per copy of itself in the
    padding (1 plus the padded positions, per dimension; zero padding makes none); ``A . b`` sums
    over the positions, then multiplies, then sums over the channels (``H W + C``), or, where
    :mod:`course_lib.crown` transposes by autograd (string padding, a padding mode other than
    zeros), sums the output's products.
    """
    if isinstance(layer, nn.Linear):
        return layer.out_features
    kh, kw = layer.kernel_size
    copies, bias_terms = 1, out_shape[1] * out_shape[2] + out_shape[0]
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):  # crown's autograd transpose
        bias_terms = math.prod(out_shape)
    if layer.padding_mode != "zeros":
        left_w, right_w, top_h, bottom_h = layer._reversed_padding_repeated_twice
        copies = (1 + left_w + right_w) * (1 + top_h + bottom_h)
    return max(layer.out_channels // layer.groups * kh * kw * copies, bias_terms)


def relu_lines(lower: Tensor, upper: Tensor, slopes: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Lines ``a_lo z <= relu(z) <= a_hi z + b_hi`` valid in real arithmetic on ``[lower, upper]``.

    Unstable units: the triangle's upper side with its intercept rounded up (module docstring),
    ``a_lo = slopes`` (alpha-CROWN's, values in [0, 1], broadcastable) or the adaptive
    ``1 if u > -l else 0``.

    Returns:
        ``(a_lo, a_hi, b_hi)``: lower's shape (a_lo slopes' when given); slopes in [0, 1].

    Examples:
        >>> a_lo, a_hi, b_hi = relu_lines(torch.tensor([-1.0, 1.0]), torch.tensor([3.0, 2.0]))
        >>> a_lo.tolist(), a_hi.tolist(), bool(b_hi[0] >= 0.75), b_hi[1].item()
        ([1.0, 1.0], [0.75, 1.0], True, 0.0)
    """
    unstable = (lower < 0) & (upper > 0)
    active = (lower >= 0).to(lower.dtype)
    width = torch.where(unstable, upper - lower, torch.ones_like(lower))
    a_hi = torch.where(unstable, upper / width, active)
    at_l = rounding.up(a_hi * -lower)  # a l + b >= 0 = relu(l)
    at_u = rounding.up(upper - rounding.down(a_hi * upper))  # a u + b >= u = relu(u)
    b_hi = torch.where(unstable, torch.maximum(at_l, at_u), torch.zeros_like(lower))
    a_lo = (upper > -lower).to(lower.dtype) if slopes is None else slopes
    return torch.where(unstable, a_lo, active), a_hi, b_hi


def _up_const(value: float, like: Tensor) -> Tensor:
    """A 0-d tensor of like's dtype and device, >= the Python float ``value``."""
    t = torch.tensor(value, dtype=like.dtype, device=like.device)
    return rounding.up(t) if float(t) < value else t


def _slack(A: Tensor, V: Tensor, n: int, in_numel: int, zmax: float) -> Tensor:
    """``up(up(G e) + T)`` (N, S): the rounding error of one step (module docstring).

    A: (N, S, ...) the coefficients before the step; V: (N, ...) of A's entries, ``V >= 0``."""
    D = V[0].numel()
    m = max(n, D)
    u = rounding.unit_roundoff(A.dtype)
    if m * u > 0.25:
        raise ValueError(f"sound CROWN: {m} terms are too many for a rounding bound in {A.dtype}")
    G = _up_const(2 * rounding.gamma(m, A.dtype) * (1 + 2.0 ** -20), A)  # 2 ** -20: Python's own rounding
    T = _up_const(2 * rounding.smallest_subnormal(A.dtype) * (D + n * (in_numel * zmax + 1)), A)
    e = torch.einsum("nsd,nd->ns", A.flatten(2).abs(), V.flatten(1))
    return rounding.up(rounding.up(G * e) + T)


def _absmax(box: tuple[Tensor, Tensor]) -> Tensor:
    return torch.maximum(box[0].abs(), box[1].abs())


def sound_backward(rules: list, k: int, A: Tensor, shapes: list, pre: dict, boxes: list,
                   alphas: dict | None = None) -> Tensor:
    """Lower bounds (N, S) on ``A . z_k`` valid for the real network on the real input ball.

    Args:
        rules: :mod:`course_lib.crown`'s ``(layer, table entry, linear rule)`` per layer, of the
            types :func:`check_layers` accepts.
        k: how many layers ``z_k`` is the output of; A: (N, S, *z_k), exactly representable.
        shapes: every layer's input shape (without N), then the output's.
        pre: ``pre[i]``, sound bounds on ReLU i's input (its lines); boxes: ``boxes[i]`` sound
            bounds on layer i's input (``boxes[0]`` the float input box), for ``zmax``.
        alphas: ``alphas[i]`` (N, S, *shape) in [0, 1]: lower slopes of ReLU i's unstable units.
    """
    c = torch.zeros(A.shape[:2], dtype=A.dtype, device=A.device)
    for i in reversed(range(k)):
        layer, rule, linear = rules[i]
        if rule.kind == "shape":
            A = linear(layer, A, shapes[i])[0]
            continue
        zmax = _absmax(boxes[i])
        if rule.kind == "monotone":  # a ReLU
            slopes = None if alphas is None else alphas.get(i)
            a_lo, a_hi, b_hi = relu_lines(*(t.unsqueeze(1) for t in pre[i]), slopes)
            pos, neg = A.clamp(min=0), A.clamp(max=0)
            new_A, beta = pos * a_lo + neg * a_hi, (neg * b_hi).flatten(2).sum(-1)
            with torch.no_grad():
                V, n = rounding.up(zmax + b_hi.squeeze(1).abs()), math.prod(shapes[i])
        else:  # Linear or Conv2d
            new_A, beta = linear(layer, A, shapes[i])
            with torch.no_grad():
                _, V = layers.sound_step(layer, torch.zeros_like(zmax), zmax)  # >= |W| zmax
                if layer.bias is not None:
                    b = layer.bias.abs() if isinstance(layer, nn.Linear) else layer.bias.abs().view(-1, 1, 1)
                    V = rounding.up(V + b)
                n = terms(layer, shapes[i + 1])
        with torch.no_grad():
            slack = _slack(A, V, n, math.prod(shapes[i]), float(zmax.max()))
        c = rounding.down(rounding.down(c + beta) - slack)
        A = new_A
    lo, hi = (t.flatten(1) for t in boxes[0])
    A = A.flatten(2)
    beta = torch.einsum("nsd,nd->ns", A.clamp(min=0), lo) + torch.einsum("nsd,nd->ns", A.clamp(max=0), hi)
    with torch.no_grad():
        zmax = torch.maximum(lo.abs(), hi.abs())
        slack = _slack(A, zmax, lo.shape[1] + 1, lo.shape[1], float(zmax.max()))
    c = rounding.down(rounding.down(c + beta) - slack)
    return torch.where(torch.isfinite(c), c, -math.inf)


def sound_layer_bounds(rules: list, box: tuple[Tensor, Tensor], shapes: list, *,
                       by_crown: bool) -> tuple[dict, list]:
    """``(pre, boxes)`` for :func:`sound_backward`: each ReLU's pre-activation bounds (sound CROWN
    if ``by_crown``, else sound IBP) and every layer's input box (sound IBP, intersected with the
    CROWN bounds at each ReLU), all (N, *shape) in the box's dtype, valid for the real network;
    ``box``: the float box around the real input ball (:func:`course_lib.rounding.box`)."""
    lo = box[0]
    boxes, pre = [box], {}
    for i, (layer, rule, _) in enumerate(rules):
        if rule.kind == "monotone":
            if by_crown:
                A = identity_spec(lo.shape[0], shapes[i], lo)
                m = A.shape[1] // 2
                bounds = sound_backward(rules, i, A, shapes, pre, boxes)
                pre[i] = bounds[:, :m].view(-1, *shapes[i]), -bounds[:, m:].view(-1, *shapes[i])
                boxes[i] = torch.maximum(boxes[i][0], pre[i][0]), torch.minimum(boxes[i][1], pre[i][1])
            else:
                pre[i] = boxes[i]
        mu, r = layers.sound_step(layer, *rounding.centre_radius(*boxes[i]))
        boxes.append((rounding.down(mu - r), rounding.up(mu + r)))
    return pre, boxes
