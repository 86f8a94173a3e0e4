"""The layer table: one entry per layer type, with its interval rule and its sound-rounding rule.

:mod:`course_lib.ibp` (plain and ``sound=True``), :mod:`course_lib.rounding` and
:mod:`course_lib.verification` walk a network through this table and nothing else, so adding
a layer type to all of them is one call here:

* :func:`register_affine` for a layer ``z -> W z + b`` (Linear, Conv2d): the interval rule is
  centre/radius through the map, ``mu' = W mu + b``, ``r' = |W| r``; the sound rule widens the
  radius by a provable bound on the rounding (:func:`course_lib.rounding.gamma`);
* :func:`register_monotone` for an elementwise non-decreasing activation (ReLU, sigmoid, tanh):
  the activation on the two ends ``[f(mu - r), f(mu + r)]``; the sound rule rounds the ends
  outward first, and widens ``f``'s own rounding unless ``f`` is exact;
* :func:`register_shape` for a layer that only moves numbers around (Flatten, Identity): the
  layer itself on the centre and on the radius, exact.

A layer whose type (or a base class of it) is not in the table is an error naming it.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> _ = register_monotone(nn.LeakyReLU)  # one entry: IBP, sound IBP and the verifier accept it
    >>> mu, r = interval_step(nn.LeakyReLU(0.1), torch.tensor([0.0]), torch.tensor([1.0]))
    >>> [round(v, 3) for v in (mu - r).tolist() + (mu + r).tolist()]
    [-0.1, 1.0]
    >>> _ = unregister(nn.LeakyReLU)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import rounding

Interval = tuple[Tensor, Tensor]
Step = Callable[[nn.Module, Tensor, Tensor], Interval]


@dataclass(frozen=True)
class Rule:
    """One table entry. ``interval(layer, mu, r)``: the centre and radius after the layer, in
    floating point (may overwrite ``mu`` and ``r`` when no gradient flows, see :func:`interval_step`);
    ``sound(layer, mu, r)``: the same, with the radius widened so that the real-arithmetic
    image lies inside; ``kind``: ``"affine"``, ``"monotone"`` or ``"shape"``; ``linear``: the
    CROWN rule (:mod:`course_lib.crown`, :func:`register_linear`), for an affine or shape layer
    ``linear(layer, A, in_shape) -> (A W, A b)`` (coefficients (N, S, *out) pulled back to
    (N, S, *in)), for an activation ``linear(layer, l, u) -> (a_lo, b_lo, a_hi, b_hi)``, lines
    below and above it on ``[l, u]``; None: CROWN transposes an affine or shape layer by autograd
    and refuses an activation."""

    kind: str
    interval: Step
    sound: Step
    linear: Callable | None = None


TABLE: dict[type, Rule] = {}


def register(layer_type: type, rule: Rule) -> type:
    """Put ``rule`` in the table for ``layer_type`` (and its subclasses); returns the type."""
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise TypeError(f"layer_type must be an nn.Module subclass, got {layer_type!r}")
    TABLE[layer_type] = rule
    return layer_type


def unregister(layer_type: type) -> Rule | None:
    """Remove ``layer_type``'s entry (e.g. a test's toy layer); returns it, or None."""
    return TABLE.pop(layer_type, None)


def register_linear(layer_type: type, linear: Callable) -> type:
    """Give ``layer_type``'s entry (already in the table) its CROWN rule (see :class:`Rule`)."""
    if layer_type not in TABLE:
        raise TypeError(f"register {layer_type!r} first (register_affine, register_monotone, register_shape)")
    TABLE[layer_type] = replace(TABLE[layer_type], linear=linear)
    return layer_type


def supported() -> tuple[type, ...]:
    """The layer types in the table, in registration order."""
    return tuple(TABLE)


def rule_for(layer: nn.Module) -> Rule | None:
    """The entry of ``layer``'s type, or of its nearest registered base class; None if none."""
    rule = TABLE.get(type(layer))  # the common case, one lookup
    if rule is not None:
        return rule
    for cls in type(layer).__mro__:
        rule = TABLE.get(cls)
        if rule is not None:
            return rule
    return None


def interval_step(layer: nn.Module, mu: Tensor, r: Tensor) -> Interval:
    """One layer in centre/radius form (the table's interval rule).

    ``mu`` and ``r`` must be tensors the propagation made (never a caller's): when no gradient
    flows through them, a rule may overwrite them, since on a CPU a fresh activation-sized
    tensor costs more in page faults than the arithmetic."""
    return _rule(layer).interval(layer, mu, r)


def sound_step(layer: nn.Module, mu: Tensor, r: Tensor) -> Interval:
    """One layer in centre/radius form, rounded outward (the table's sound rule)."""
    return _rule(layer).sound(layer, mu, r)


def _rule(layer: nn.Module) -> Rule:
    rule = rule_for(layer)
    if rule is None:
        raise TypeError(f"no interval rule for {type(layer).__name__}; register it in course_lib.layers")
    return rule


# ---------------------------------------------------------------------------
# Affine layers: z -> W z + b
# ---------------------------------------------------------------------------

def register_affine(layer_type: type, apply: Callable[[nn.Module, Tensor, Tensor, Tensor | None], Tensor], *,
                    weight: Callable[[nn.Module], Tensor] = lambda layer: layer.weight,
                    bias: Callable[[nn.Module], Tensor | None] = lambda layer: layer.bias,
                    fan_in: Callable[[nn.Module], int] | None = None,
                    bias_view: Callable[[nn.Module, Tensor], Tensor] = lambda layer, b: b,
                    interval: Step | None = None) -> type:
    """Register an affine layer type: ``apply(layer, x, W, b)`` computes ``W x + b`` with the
    weight ``W`` given (the rules pass ``|W|`` for the radius) and ``b`` None or the bias.

    ``fan_in(layer)``: the most terms in one output's sum (default: ``W[0].numel()``);
    ``bias_view(layer, b)``: the bias shaped to broadcast against an output (a Conv2d's
    ``b.view(-1, 1, 1)``); ``interval``: a faster plain rule, if any. Used by the sound rule; the real image is ``W mu + b`` with radius
    ``|W| r``, the computed centre off by at most ``g (|W| |mu| + |b|)``, ``g = gamma_(fan_in + 3)``,
    so the returned radius is ``(|W| (r + g |mu|) + e) (1 + 4 g) + 2 g |b|``: the factor and the
    doubled bias term absorb the rounding of computing the radius itself (a sum of non-negative
    terms, relative error <= g). ``e = 2 (fan_in + 3) (1 + max |W|) s`` adds the absolute error of
    products that underflow into subnormals (each errs by up to half the smallest subnormal ``s``).
    """

    fast = interval  # a faster plain rule, if given (the same formula)

    def interval(layer: nn.Module, mu: Tensor, r: Tensor) -> Interval:
        W = weight(layer)
        return apply(layer, mu, W, bias(layer)), apply(layer, r, W.abs(), None)  # W mu + b, |W| r

    def sound(layer: nn.Module, mu: Tensor, r: Tensor) -> Interval:
        W, b = weight(layer), bias(layer)
        n = (W[0].numel() if fan_in is None else fan_in(layer)) + 3
        g = rounding.gamma(n, mu.dtype)
        widened = torch.add(r, mu.abs(), alpha=g)
        centre, radius = apply(layer, mu, W, b), apply(layer, widened, W.abs(), None)
        underflow = 2 * n * rounding.smallest_subnormal(mu.dtype) * (1 + W.detach().abs().max())
        radius = (radius + underflow) * (1 + 4 * g)
        if b is not None:
            radius = radius + 2 * g * bias_view(layer, b.abs())
        return centre, radius

    return register(layer_type, Rule("affine", fast or interval, sound))


def _conv_apply(conv: nn.Conv2d, x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
    # _conv_forward applies the padding mode. Zero padding: every input meets each kernel window
    # at most once, so |W| r is the exact radius. Reflect/replicate/circular copy inputs into the
    # padding (coefficients 0 or 1), so one input can meet a window twice with weights of opposite
    # signs: |W| r then over-counts, still sound (|a + b| <= |a| + |b|) but looser.
    return conv._conv_forward(x, W, b)


# the functional forms skip nn.Module's call machinery
register_affine(nn.Linear, lambda layer, x, W, b: F.linear(x, W, b),
                interval=lambda layer, mu, r: (F.linear(mu, layer.weight, layer.bias), F.linear(r, layer.weight.abs())))
register_affine(nn.Conv2d, _conv_apply, bias_view=lambda layer, b: b.view(-1, 1, 1))


# ---------------------------------------------------------------------------
# Monotone activations: [f(l), f(u)]
# ---------------------------------------------------------------------------

def _monotone_interval(layer: nn.Module, mu: Tensor, r: Tensor) -> Interval:
    hi, lo = layer(mu + r), layer(mu - r)  # through the two ends, back to centre/radius
    centre = torch.lerp(lo, hi, 0.5)  # (lo + hi) / 2 in one pass
    return centre, hi.sub_(centre) if not hi.requires_grad else hi - centre


def _monotone_sound(exact: bool, low: float, high: float) -> Step:
    def sound(layer: nn.Module, mu: Tensor, r: Tensor) -> Interval:
        lo, hi = layer(rounding.down(mu - r)), layer(rounding.up(mu + r))
        if not exact:  # 16 ulps of slack for the activation's own rounding, kept in its range
            slack_lo = 8 * torch.finfo(lo.dtype).eps * lo.abs() + torch.finfo(lo.dtype).tiny
            slack_hi = 8 * torch.finfo(hi.dtype).eps * hi.abs() + torch.finfo(hi.dtype).tiny
            lo, hi = (lo - slack_lo).clamp(min=low), (hi + slack_hi).clamp(max=high)
        return rounding.centre_radius(lo, hi)

    return sound


def register_monotone(layer_type: type, *, exact: bool = False, low: float = -math.inf,
                      high: float = math.inf, interval: Step | None = None) -> type:
    """Register an elementwise non-decreasing activation (not checked): bounds ``[f(l), f(u)]``.

    ``exact``: ``f`` is correctly rounded (ReLU); otherwise the sound rule widens each end by
    16 ulps, clamped to ``f``'s range ``[low, high]``. ``interval``: a faster plain rule, if any.
    """
    return register(layer_type, Rule("monotone", interval or _monotone_interval, _monotone_sound(exact, low, high)))


def _relu_interval(layer: nn.Module, mu: Tensor, r: Tensor) -> Interval:
    if not (mu.requires_grad or r.requires_grad):  # in place: see interval_step
        hi = torch.add(mu, r).relu_()
        lo = mu.sub_(r).relu_()
        centre = lo.lerp_(hi, 0.5)
        return centre, hi.sub_(centre)
    hi, lo = torch.add(mu, r).relu_(), torch.sub(mu, r).relu_()
    centre = torch.lerp(lo, hi, 0.5)
    return centre, hi - centre


register_monotone(nn.ReLU, exact=True, interval=_relu_interval)
register_monotone(nn.Sigmoid, low=0.0, high=1.0)
register_monotone(nn.Tanh, low=-1.0, high=1.0)


# ---------------------------------------------------------------------------
# Layers that move numbers around: exact on the centre and the radius
# ---------------------------------------------------------------------------

def _shape(layer: nn.Module, mu: Tensor, r: Tensor) -> Interval:
    # forward itself: layers_of refused overridden forwards and hooks, so this is layer(mu)
    return layer.forward(mu), layer.forward(r)


def register_shape(layer_type: type) -> type:
    """Register a layer that only reshapes, copies or selects its input: itself on both."""
    return register(layer_type, Rule("shape", _shape, _shape))


register_shape(nn.Flatten)
register_shape(nn.Identity)


# ---------------------------------------------------------------------------
# A network: its layers in order, refused when its forward pass is not the formulas'
# ---------------------------------------------------------------------------

def altered_forward(module: nn.Module) -> str | None:
    """Why ``module``'s output may differ from its layer type's own formula, or None.

    IBP (and :mod:`course_lib.verification`) read a layer's weights and apply the formula of its
    type; a subclass that overrides ``forward`` (an input normalization inside an
    ``nn.Sequential`` subclass, a scaled ``Linear``) or a forward hook would make the bounds
    describe another function than the one the model computes: unsound."""
    base = next((t for t in (nn.Sequential,) + supported() if isinstance(module, t)), None)
    if base is None:
        return None
    for method in ("forward", "_conv_forward"):
        if getattr(type(module), method, None) is not getattr(base, method, None):
            return f"{type(module).__name__} overrides {base.__name__}.{method}"
    if module._forward_hooks or module._forward_pre_hooks:
        return f"{type(module).__name__} has forward hooks"
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return "global forward hooks are registered (torch.nn.modules.module.register_module_forward_hook)"
    return None


def layers_of(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` in order, nested ``nn.Sequential`` flattened; a non-Sequential
    module in the table counts as a one-layer network.

    Raises:
        TypeError: naming the first layer not in the table and its index, or a module whose
            forward pass is not its type's (:func:`altered_forward`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (an nn.Sequential of layers), got {type(model).__name__}")

    def flatten(m: nn.Module) -> list[nn.Module]:
        why = altered_forward(m)
        if why is not None:
            raise TypeError(f"IBP cannot bound {m.__class__.__name__} ({why}): its bounds would follow the layer "
                            "formulas, not the model's forward pass; use plain nn.Sequential and layers")
        if isinstance(m, nn.Sequential):
            return [leaf for child in m for leaf in flatten(child)]
        return [m]

    layers = flatten(model)
    for i, layer in enumerate(layers):
        if rule_for(layer) is None:
            names = ", ".join(t.__name__ for t in supported())
            raise TypeError(f"IBP does not support layer {i} ({type(layer).__name__}: {layer}); "
                            f"model must be an nn.Sequential of {names} (or register the type in course_lib.layers)")
    return layers


# ---------------------------------------------------------------------------
# The last linear layer folded into a specification
# ---------------------------------------------------------------------------

def folded_bound(C: Tensor, d: Tensor | None, mu: Tensor, r: Tensor, *, sound: bool = False) -> Tensor:
    """Lower bounds on ``C[n, k] . h + d[n, k]`` over ``h in [mu - r, mu + r]``: ``C mu - |C| r + d``.

    Exact for the box (a linear function's minimum is at a corner). With ``C[n, k] = w_y - w_k``
    and ``d = b_y - b_k`` these are the folded margins of the last layer (Gowal et al. 2018).

    ``sound``: the computed ``C`` (a difference of weights) is off by ``u |C|``; the two sums
    over H terms by ``g |C| . |mu|`` and ``g |C| . r``; ``d`` by ``u |d|`` (a difference of two
    biases, whose magnitudes ``d_scale`` bounds); each product that underflows by half the
    smallest subnormal. The bound subtracts twice the sum of these and rounds down.

    Args:
        C: (N, K, H); d: None or (N, K) (``sound`` wants a pair ``(d, d_scale)``);
        mu, r: (N, H).

    Returns:
        (N, K).
    """
    C_abs = C.abs()
    margins = torch.einsum("nkh,nh->nk", C, mu) - torch.einsum("nkh,nh->nk", C_abs, r)
    if not sound:
        return margins if d is None else margins + d
    H = C.shape[-1]
    g = rounding.gamma(H + 4, mu.dtype) + 2 * rounding.unit_roundoff(mu.dtype)
    scale = torch.einsum("nkh,nh->nk", C_abs, mu.abs() + r)
    if d is not None:
        d, d_scale = d
        margins = margins + d
        scale = scale + d_scale
    underflow = 2 * (H + 4) * rounding.smallest_subnormal(mu.dtype)
    return rounding.down(margins - 2 * g * scale - underflow)


def folded_margins(last: nn.Linear, y: Tensor, mu: Tensor, r: Tensor, *, sound: bool = False) -> Tensor:
    """Lower bounds on ``z_y - z_j`` (N, K) when the penultimate activations lie in
    ``[mu - r, mu + r]`` and ``last`` is the final ``nn.Linear``: :func:`folded_bound` with
    ``C = w_y - w_j``, ``d = b_y - b_j``. The true class's column is not special-cased here."""
    W, b = last.weight, last.bias
    C = W[y][:, None, :] - W[None, :, :]  # (N, K, H): w_y - w_j
    d = None
    if b is not None:
        d = b[y][:, None] - b[None, :]
        if sound:
            d = (d, b[y].abs()[:, None] + b.abs()[None, :])
    return folded_bound(C, d, mu, r, sound=sound)
