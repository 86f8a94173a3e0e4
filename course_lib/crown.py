"""Linear relaxation bounds: CROWN and CROWN-IBP (certification beyond IBP, lecture 4).

IBP carries a box through the network; CROWN (Zhang et al. 2018, "Efficient neural network
robustness certification with general activation functions") carries *linear functions* of the
input backwards from the quantity to bound. For a specification ``C`` (rows ``c``, e.g. a margin
``c = e_y - e_t``) and a network ``z_m = L_m(... L_1(x))``, start from ``A = C``, ``c0 = 0``:
the bound ``C z_m >= A z_k + c0`` holds with ``k = m``, and each layer moves it one layer down:

* affine ``z_k = W z_{k-1} + b``: ``A z_k + c0 = (A W) z_{k-1} + (c0 + A b)``, exact;
  a Conv2d's ``A W`` is a transposed convolution (``conv_transpose2d``, no matrix is built);
* ReLU ``z_k = relu(z_{k-1})`` with pre-activation bounds ``l <= z_{k-1} <= u``: stable units
  are exact (slope 1 if ``l >= 0``, 0 if ``u <= 0``); an unstable one (``l < 0 < u``) lies
  between two lines, ``alpha z <= relu(z) <= u (z - l) / (u - l)``, with the adaptive lower
  slope ``alpha = 1 if u > -l else 0`` (the line closer to the triangle's area). A lower bound
  takes, coordinate by coordinate, the lower line where ``A >= 0`` and the upper line where
  ``A < 0``: ``A' = A+ alpha + A- s``, ``c0' = c0 + A- (-s l)``, ``s = u / (u - l)``;
* Flatten: ``A`` reshaped back.

At the input, ``A x + c0`` is minimized over the box ``[lo, hi]`` (the L-inf ball of radius
eps around x clipped to [0, 1]) in closed form: ``A mu - |A| r + c0`` with ``mu = (lo + hi) / 2``,
``r = (hi - lo) / 2``. Upper bounds are ``-`` the lower bounds of ``-C``.

The pre-activation bounds ``l, u`` of each ReLU come from CROWN itself (``method="crown"``: the
same backward pass with ``C = +-I`` on that layer, layer after layer, ``O(depth^2)`` passes) or
from IBP (``method="crown-ibp"``, Zhang et al. 2020: one interval pass, then CROWN for the
output only). With the same pre-activation bounds CROWN never beats the LP (triangle) relaxation
(each of its linear bounds is valid on the triangle) and the LP never beats the exact value
(:mod:`course_lib.verification`); CROWN is usually, not always, tighter than IBP.

The per-type rules are entries of the layer table (:mod:`course_lib.layers`, ``Rule.linear``,
registered here): an affine or shape type registered there without one is pulled back by
autograd (the transpose of its map), so only an activation needs a relaxation of its own; a
type without any (Sigmoid, Tanh, anything unregistered) is an error naming the layer.

Bounds hold up to floating-point rounding (as :func:`course_lib.ibp.ibp_bounds` without
``sound``); they are differentiable, on x's device and dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import _checks, ibp, layers
from course_lib.intervals import input_box

METHODS = ("crown", "crown-ibp")


# ---------------------------------------------------------------------------
# The table's CROWN rules: coefficients A (N, S, *out) pulled back to (N, S, *in), plus A . b
# ---------------------------------------------------------------------------

def _linear_rule(layer: nn.Linear, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor | float]:
    offset = 0.0 if layer.bias is None else A @ layer.bias
    return A @ layer.weight, offset


def _conv_rule(conv: nn.Conv2d, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor | float]:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):  # copies into the padding
        return _affine_by_autograd(conv, A, in_shape)
    N, S = A.shape[:2]
    flat = A.reshape(N * S, *A.shape[2:])
    # the transposed convolution returns the smallest input that gives this output; a stride
    # that skipped the last rows or columns of the input leaves them out: pad them back (zeros)
    extra = [in_shape[1 + j] - ((flat.shape[2 + j] - 1) * conv.stride[j] - 2 * conv.padding[j]
                                + conv.dilation[j] * (conv.kernel_size[j] - 1) + 1) for j in (0, 1)]
    back = F.conv_transpose2d(flat, conv.weight, None, conv.stride, conv.padding, tuple(extra),
                              conv.groups, conv.dilation)
    offset = 0.0 if conv.bias is None else A.sum((-2, -1)) @ conv.bias
    return back.view(N, S, *in_shape), offset


def _reshape_rule(layer: nn.Module, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, float]:
    if isinstance(layer, nn.Flatten) and layer.start_dim != 1:
        return _shape_by_autograd(layer, A, in_shape)
    return A.reshape(*A.shape[:2], *in_shape), 0.0


def _pull_back(fn, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``(A J, A . fn(0))`` for an affine ``fn`` of a batch (N * S, *in): its transpose by autograd."""
    N, S = A.shape[:2]
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        z = torch.zeros(N * S, *in_shape, dtype=A.dtype, device=A.device, requires_grad=True)
        out = fn(z)
        (back,) = torch.autograd.grad(out, z, A.reshape(out.shape), create_graph=keep_graph)
    offset = (A.reshape(N, S, -1) * out.reshape(N, S, -1)).sum(-1)
    return back.view(N, S, *in_shape), offset if keep_graph else offset.detach()


def _affine_by_autograd(layer: nn.Module, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    rule = layers.rule_for(layer)
    return _pull_back(lambda z: rule.interval(layer, z, torch.zeros_like(z))[0], A, in_shape)


def _shape_by_autograd(layer: nn.Module, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, float]:
    return _pull_back(layer.forward, A, in_shape)[0], 0.0


def relu_relaxation(layer: nn.Module, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The lines ``a_lo z + b_lo <= relu(z) <= a_hi z + b_hi`` on ``[lower, upper]``.

    Stable units exactly (``l >= 0``: both lines ``z``; ``u <= 0``: both 0); unstable ones the
    upper side of the triangle, ``u (z - l) / (u - l)``, and ``alpha z`` below with
    ``alpha = 1 if u > -l else 0`` (Zhang et al. 2018's adaptive choice).

    Returns:
        ``(a_lo, b_lo, a_hi, b_hi)``, each of lower's shape.

    Examples:
        >>> a_lo, b_lo, a_hi, b_hi = relu_relaxation(nn.ReLU(), torch.tensor([-1.0, 1.0, -3.0]),
        ...                                           torch.tensor([3.0, 2.0, 1.0]))
        >>> a_lo.tolist(), a_hi.tolist(), b_hi.tolist()
        ([1.0, 1.0, 0.0], [0.75, 1.0, 0.25], [0.75, 0.0, 0.75])
    """
    unstable = (lower < 0) & (upper > 0)
    active = (lower >= 0).to(lower.dtype)
    width = torch.where(unstable, upper - lower, torch.ones_like(lower))  # no 0/0 off the unstable units
    a_hi = torch.where(unstable, upper / width, active)
    b_hi = torch.where(unstable, -a_hi * lower, torch.zeros_like(lower))
    a_lo = torch.where(unstable, (upper > -lower).to(lower.dtype), active)
    return a_lo, torch.zeros_like(lower), a_hi, b_hi


layers.register_linear(nn.Linear, _linear_rule)
layers.register_linear(nn.Conv2d, _conv_rule)
layers.register_linear(nn.Flatten, _reshape_rule)
layers.register_linear(nn.Identity, _reshape_rule)
layers.register_linear(nn.ReLU, relu_relaxation)


def _crown_rules(model: nn.Module) -> list[tuple[nn.Module, layers.Rule, object]]:
    """Each layer with its table entry and its CROWN rule (the autograd transpose by default)."""
    try:
        sequence = layers.layers_of(model)
    except TypeError as error:
        raise TypeError(f"CROWN cannot bound this model: {error}") from None
    out = []
    for i, layer in enumerate(sequence):
        rule = layers.rule_for(layer)
        linear = rule.linear or {"affine": _affine_by_autograd, "shape": _shape_by_autograd}.get(rule.kind)
        if linear is None:
            raise TypeError(f"CROWN has no linear relaxation for layer {i} ({type(layer).__name__}: {layer}); "
                            "register one with course_lib.layers.register_linear (ReLU has one)")
        out.append((layer, rule, linear))
    return out


# ---------------------------------------------------------------------------
# The backward pass and the bounds
# ---------------------------------------------------------------------------

def _backward(rules: list, k: int, A: Tensor, shapes: list, pre: dict, lo: Tensor, hi: Tensor) -> Tensor:
    """Lower bounds (N, S) on ``A . z_k`` (``z_k``: the output of the first k layers, ``A`` of shape
    (N, S, *z_k)) over the input box ``[lo, hi]``; ``pre[i]``: bounds on layer i's input."""
    offset = torch.zeros(A.shape[:2], dtype=A.dtype, device=A.device)
    for i in reversed(range(k)):
        layer, rule, linear = rules[i]
        if rule.kind == "monotone":
            a_lo, b_lo, a_hi, b_hi = (t.unsqueeze(1) for t in linear(layer, *pre[i]))
            pos, neg = A.clamp(min=0), A.clamp(max=0)  # lower line where A >= 0, upper where A < 0
            offset = offset + (pos * b_lo + neg * b_hi).flatten(2).sum(-1)
            A = pos * a_lo + neg * a_hi
        else:
            A, c = linear(layer, A, shapes[i])
            offset = offset + c
    mu, r = torch.lerp(lo, hi, 0.5).flatten(1), ((hi - lo) / 2).flatten(1)
    A = A.flatten(2)
    return torch.einsum("nsd,nd->ns", A, mu) - torch.einsum("nsd,nd->ns", A.abs(), r) + offset


def _check_spec(C, n: int, k: int, like: Tensor) -> Tensor:
    if C is None:
        return torch.eye(k, dtype=like.dtype, device=like.device).expand(n, k, k)
    if not isinstance(C, Tensor) or C.ndim != 3 or C.shape[0] != n or C.shape[2] != k or C.shape[1] == 0:
        shown = tuple(C.shape) if isinstance(C, Tensor) else type(C).__name__
        raise ValueError(f"C must be None or a tensor of shape (N, S, K) = ({n}, S, {k}) (N examples, "
                         f"S >= 1 specifications, K logits), got {shown}")
    if C.is_complex() or not torch.isfinite(C).all():
        raise ValueError("C must hold finite real numbers")
    return C.to(dtype=like.dtype, device=like.device)


def crown_bounds(model: nn.Module, x: Tensor, eps: float | Tensor, *, C: Tensor | None = None,
                 method: str = "crown") -> tuple[Tensor, Tensor]:
    """Bounds on ``C @ logits`` over the L-inf ball of radius eps around x, clipped to [0, 1].

    See the module docstring for the algebra: each specification row's linear bound
    ``A z + c0`` is pulled back layer by layer (``A W``, ``c0 + A b``; through a ReLU its lower
    line where ``A >= 0``, its upper line where ``A < 0``) and minimized over the input box,
    ``A mu - |A| r + c0``.

    Args:
        model: an ``nn.Sequential`` of Linear, Conv2d, ReLU and Flatten (nested ones flattened);
            maps x (N, ...) to logits (N, K).
        x: inputs (N, ...), values in [0, 1].
        eps: L-inf radius, a finite number >= 0 (or a tensor (N,) of per-example radii).
        C: the specification, (N, S, K); ``None`` bounds the logits themselves (S = K).
            ``C[n, s] = e_y - e_t`` bounds the margin of class y over t.
        method: ``"crown"`` (pre-activation bounds by CROWN, tighter, ``depth`` backward passes)
            or ``"crown-ibp"`` (by IBP, one backward pass).

    Returns:
        ``(lower, upper)``, each (N, S): for every x' of the clipped ball,
        ``lower <= C @ model(x') <= upper`` up to floating-point rounding; equal to
        ``C @ model(x)`` at eps = 0 (up to rounding).

    Raises:
        TypeError: for a layer CROWN does not support, named with its index.
        ValueError: for eps < 0, nan or infinite, x outside [0, 1], C of the wrong shape, or an
            unknown method (each message names the argument).

    Examples:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        ...     _ = model[0].bias.zero_(), model[2].weight.fill_(1.0), model[2].bias.zero_()
        >>> x = torch.tensor([[0.5, 0.5]])  # the box [0, 1]^2; the true maximum is 2, at (1, 0)
        >>> lower, upper = crown_bounds(model, x, 0.5)
        >>> ibp_lower, ibp_upper = ibp.ibp_bounds(model, x, 0.5)
        >>> round(upper.item(), 3), round(ibp_upper.item(), 3)  # CROWN's line beats IBP's box
        (2.5, 3.0)
        >>> margin = crown_bounds(model, x, 0.0, C=torch.tensor([[[1.0]]]))[0]  # eps = 0: the forward pass
        >>> torch.allclose(margin, model(x))
        True
    """
    method = _checks.choice(method, "method", METHODS)
    rules = _crown_rules(model)
    lo, hi = input_box(x, eps)  # checks eps (a finite number >= 0) and x in [0, 1]
    shapes = [tuple(x.shape[1:])]
    with torch.no_grad():  # the shape of every layer's input, from one forward pass
        z = x
        for layer, _, _ in rules:
            z = layer(z)
            shapes.append(tuple(z.shape[1:]))
    n, k = x.shape[0], math.prod(shapes[-1])
    spec = _check_spec(C, n, k, lo)
    pre: dict[int, tuple[Tensor, Tensor]] = {}
    activations = [i for i, (_, rule, _) in enumerate(rules) if rule.kind == "monotone"]
    if method == "crown-ibp":
        boxes = ibp.interval_layer_bounds(model, lo, hi)
        pre = {i: boxes[i] for i in activations}
    else:
        for i in activations:  # pre-activation bounds by CROWN itself, from the first layer up
            m = math.prod(shapes[i])
            eye = torch.eye(m, dtype=lo.dtype, device=lo.device)
            A = torch.cat([eye, -eye]).view(1, 2 * m, *shapes[i]).expand(n, -1, *shapes[i])
            bounds = _backward(rules, i, A, shapes, pre, lo, hi)
            pre[i] = bounds[:, :m].view(n, *shapes[i]), -bounds[:, m:].view(n, *shapes[i])
    S = spec.shape[1]
    A = torch.cat([spec, -spec], 1).view(n, 2 * S, *shapes[-1])
    bounds = _backward(rules, len(rules), A, shapes, pre, lo, hi)
    return bounds[:, :S], -bounds[:, S:]
