"""Interval bound propagation (IBP) and certification from the bounds (lecture 4).

Every input in the L-inf box ``[x - eps, x + eps]`` (clipped to the data's range [0, 1]) is
pushed through the network at once as an interval per coordinate. Intervals are carried in
centre/radius form, ``mu = (l + u) / 2`` and ``r = (u - l) / 2``, because an affine map acts on
them exactly:

* affine ``z -> W z + b``: ``mu' = W mu + b``, ``r' = |W| r`` (each output's extremes over the box
  are at corners; ``|W| r`` adds up the worst case of every input separately);
* a monotone non-decreasing activation ``f`` (ReLU, sigmoid, tanh): ``[f(l), f(u)]``.

So the bounds of a network cost two forward passes: one of the centre through the layers, one of
the radius through the layers with ``|W|`` (Gowal et al. 2018, "On the effectiveness of interval
bound propagation for training verifiably robust models").

=========== =============== ================================================================
math        code            meaning
=========== =============== ================================================================
epsilon     ``eps``         L-inf radius of the threat model, in input units
l, u        ``lower``,      elementwise bounds, ``lower <= upper``, same shape
            ``upper``
mu, r       ``mu``, ``r``   centre and radius of an interval, ``r >= 0``
m_j         ``margins``     worst-case margin ``min over the box of z_y - z_j``
=========== =============== ================================================================

Certification: the network is *certified* at ``(x, y)`` when a lower bound on every margin
``z_y - z_j`` (j != y) over the whole box is > 0: then no input of the box changes the
prediction. The plain bound is ``lower[y] - upper[j]``; the tighter one folds the last linear layer
into the specification, bounding ``(w_y - w_j)^T h + (b_y - b_j)`` over the penultimate box
directly (Gowal et al. 2018, section 3), which can only be larger.

Bounds are *sound*: every input in the box gives logits inside ``[lower, upper]``, up to
floating-point rounding by default, and exactly (for the network's real arithmetic) with
``sound=True``, which rounds every step outward (:mod:`course_lib.rounding`); certification
uses it. They are usually *loose*: lecture 4
compares them with the LP relaxation and the exact worst case (:mod:`course_lib.verification`).

Supported layers, in an ``nn.Sequential`` (nested ones are flattened): ``Linear``, ``Conv2d``,
``ReLU``, ``Sigmoid``, ``Tanh``, ``Flatten``, ``Identity``. Tensors follow the input's device and
dtype; every function is differentiable (IBP training back-propagates through the bounds).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import rounding
from course_lib.attacks import _batches

MONOTONE = (nn.ReLU, nn.Sigmoid, nn.Tanh)
SUPPORTED = (nn.Linear, nn.Conv2d, nn.Flatten, nn.Identity) + MONOTONE

Interval = tuple[Tensor, Tensor]


# ---------------------------------------------------------------------------
# Interval arithmetic for one layer
# ---------------------------------------------------------------------------

def _as_tensor(value, name: str, like: Tensor | None = None) -> Tensor:
    if isinstance(value, Tensor):
        t = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        t = torch.tensor(float(value), dtype=torch.float64 if like is None else like.dtype,
                         device=None if like is None else like.device)
    else:
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype() if like is None else like.dtype)
    return t


def _check_interval(lower: Tensor, upper: Tensor) -> None:
    if lower.shape != upper.shape:
        raise ValueError(f"lower and upper must have the same shape, got {tuple(lower.shape)} and {tuple(upper.shape)}")
    if torch.isnan(lower).any() or torch.isnan(upper).any():
        raise ValueError("lower and upper must not contain nan")
    if (lower > upper).any():
        gap = (lower - upper).max().item()
        raise ValueError(f"need lower <= upper elementwise; lower exceeds upper by up to {gap:.3g}")


def interval_affine(lower, upper, W, b=None) -> Interval:
    """The exact interval image of the box ``[lower, upper]`` under ``z -> W z + b``.

    Centre/radius form: ``mu = (l + u) / 2``, ``r = (u - l) / 2``, ``mu' = W mu + b``,
    ``r' = |W| r``; returns ``(mu' - r', mu' + r')``. Each output coordinate reaches both ends at
    a corner of the box, so the result is the tightest box around the image.

    Args:
        lower, upper: numbers, 0-d tensors, vectors (in,) or batches (N, in); ``lower <= upper``.
        W: a number (a scalar gain, applied elementwise) or a matrix (out, in).
        b: a number, or a vector (out,); default 0.

    Returns:
        ``(lower', upper')``: 0-d tensors for scalars, else (out,) or (N, out). Python numbers
        become float64 tensors. The by-hand example: ``interval_affine(2, 4, 5) == (10, 20)``.

    Raises:
        TypeError: for arguments that are not numbers or tensors.
        ValueError: for mismatched shapes, ``lower > upper`` anywhere, or nan.
    """
    like = next((t for t in (lower, upper, W) if isinstance(t, Tensor)), None)
    lower, upper = _as_tensor(lower, "lower", like), _as_tensor(upper, "upper", like)
    W = _as_tensor(W, "W", lower)
    _check_interval(lower, upper)
    mu, r = (upper + lower) / 2, (upper - lower) / 2
    if W.ndim == 0:
        mu_out, r_out = W * mu, W.abs() * r
    elif W.ndim == 2:
        if mu.ndim not in (1, 2) or mu.shape[-1] != W.shape[1]:
            raise ValueError(f"lower/upper must have shape ({W.shape[1]},) or (N, {W.shape[1]}) to match "
                             f"W of shape {tuple(W.shape)}, got {tuple(mu.shape)}")
        mu_out, r_out = mu @ W.T, r @ W.abs().T
    else:
        raise ValueError(f"W must be a number or a matrix (out, in), got shape {tuple(W.shape)}")
    if b is not None:
        b = _as_tensor(b, "b", mu_out)
        if b.ndim > 1 or (b.ndim == 1 and W.ndim == 2 and b.shape[0] != W.shape[0]):
            raise ValueError(f"b must be a number or a vector ({W.shape[0] if W.ndim == 2 else ''},), "
                             f"got shape {tuple(b.shape)}")
        mu_out = mu_out + b
    return mu_out - r_out, mu_out + r_out


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
    lower, upper = _as_tensor(lower, "lower", like), _as_tensor(upper, "upper", like)
    _check_interval(lower, upper)
    return fn(lower), fn(upper)


def interval_relu(lower, upper) -> Interval:
    """``[relu(lower), relu(upper)]``: see :func:`interval_monotone`."""
    return interval_monotone(lower, upper, torch.relu)


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
    _check_interval(lower, upper)
    mu, r = _conv2d(conv, (upper + lower) / 2, (upper - lower) / 2)
    return mu - r, mu + r


# ---------------------------------------------------------------------------
# Through a network, in centre/radius form
# ---------------------------------------------------------------------------

def _conv2d(conv: nn.Conv2d, mu: Tensor, r: Tensor) -> Interval:
    # _conv_forward applies the padding mode. Zero padding: every input meets each kernel window
    # at most once, so |W| r is the exact radius. Reflect/replicate/circular copy inputs into the
    # padding (coefficients 0 or 1), so one input can meet a window twice with weights of opposite
    # signs: |W| r then over-counts, still sound (|a + b| <= |a| + |b|) but looser.
    return conv._conv_forward(mu, conv.weight, conv.bias), conv._conv_forward(r, conv.weight.abs(), None)


def altered_forward(module: nn.Module) -> str | None:
    """Why ``module``'s output may differ from its layer type's own formula, or None.

    IBP (and :mod:`course_lib.verification`) read a layer's weights and apply the formula of its
    type; a subclass that overrides ``forward`` (an input normalization inside an
    ``nn.Sequential`` subclass, a scaled ``Linear``) or a forward hook would make the bounds
    describe another function than the one the model computes: unsound."""
    base = next((t for t in (nn.Sequential,) + SUPPORTED if isinstance(module, t)), None)
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
    module supported by IBP counts as a one-layer network.

    Raises:
        TypeError: naming the first unsupported layer and its index, or a module whose forward
            pass is not its type's (:func:`altered_forward`).
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
        if not isinstance(layer, SUPPORTED):
            names = ", ".join(t.__name__ for t in SUPPORTED)
            raise TypeError(f"IBP does not support layer {i} ({type(layer).__name__}: {layer}); "
                            f"model must be an nn.Sequential of {names}")
    return layers


def _step(layer: nn.Module, mu: Tensor, r: Tensor) -> Interval:
    """One layer in centre/radius form.

    ``mu`` and ``r`` must be tensors the propagation made (never a caller's): when no gradient
    flows through them, a ReLU overwrites them, since on a CPU a fresh activation-sized tensor
    costs more in page faults than the arithmetic."""
    if isinstance(layer, nn.Linear):  # the functional forms skip nn.Module's call machinery
        return F.linear(mu, layer.weight, layer.bias), F.linear(r, layer.weight.abs())  # W mu + b, |W| r
    if isinstance(layer, nn.Conv2d):
        return _conv2d(layer, mu, r)
    if isinstance(layer, nn.Flatten):
        return mu.flatten(layer.start_dim, layer.end_dim), r.flatten(layer.start_dim, layer.end_dim)
    if isinstance(layer, nn.Identity):
        return mu, r
    # monotone activation: through the two ends, back to centre/radius
    if isinstance(layer, nn.ReLU):
        if not (mu.requires_grad or r.requires_grad):
            hi = torch.add(mu, r).relu_()
            lo = mu.sub_(r).relu_()
            centre = lo.lerp_(hi, 0.5)
            return centre, hi.sub_(centre)
        hi, lo = torch.add(mu, r).relu_(), torch.sub(mu, r).relu_()
    else:
        hi, lo = layer(mu + r), layer(mu - r)
    centre = torch.lerp(lo, hi, 0.5)  # (lo + hi) / 2 in one pass
    return centre, hi.sub_(centre) if not hi.requires_grad else hi - centre


def interval_layer_bounds(model: nn.Module, lower: Tensor, upper: Tensor) -> list[Interval]:
    """Bounds on every layer's output for the box ``[lower, upper]`` of inputs.

    Args:
        model: an ``nn.Sequential`` of supported layers (module docstring).
        lower, upper: a batch of boxes, (N, ...) as the model's input, ``lower <= upper``.

    Returns:
        ``[(lower_0, upper_0), (lower_1, upper_1), ...]``: the input box first, then one pair per
        layer (index ``i + 1`` after layer ``i``), the last pair on the logits.

    Raises:
        TypeError: for an unsupported layer (named, with its index).
        ValueError: for mismatched shapes, ``lower > upper`` or nan.
    """
    layers = layers_of(model)
    _check_interval(lower, upper)
    mu, r = (upper + lower) / 2, (upper - lower) / 2
    out = [(lower, upper)]
    for layer in layers:
        mu, r = _step(layer, mu, r)
        out.append((mu - r, mu + r))
    return out


def interval_network(model: nn.Module, lower: Tensor, upper: Tensor) -> Interval:
    """Bounds on the model's output for the box ``[lower, upper]``: the last pair of
    :func:`interval_layer_bounds`, computed without keeping the others."""
    _check_interval(lower, upper)
    return _propagate(layers_of(model), *_centre_radius(lower, upper))


def _propagate(layers: list[nn.Module], mu: Tensor, r: Tensor) -> Interval:
    for layer in layers:
        mu, r = _step(layer, mu, r)
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
    return _clipped_box(x, _checked_eps(x, eps, domain), domain)


def _clipped_box(x: Tensor, eps: float | Tensor, domain: tuple[float, float] | None) -> Interval:
    """:func:`input_box` for an eps that :func:`_checked_eps` has already checked."""
    if isinstance(eps, Tensor):
        eps = eps.to(x.dtype)
    if domain is None:
        return x - eps, x + eps
    return torch.sub(x, eps).clamp_(min=domain[0]), torch.add(x, eps).clamp_(max=domain[1])


def _checked_eps(x: Tensor, eps: float | Tensor, domain: tuple[float, float] | None) -> float | Tensor:
    """Check x, eps and domain (see :func:`input_box`); returns eps as a number, or as a tensor
    of shape (N, 1, ...) on x's device in eps's own dtype (the sound box rounds it itself)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty floating-point batch (N, ...), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if isinstance(eps, Tensor) and eps.ndim == 0:
        eps = eps.item()  # one radius for the batch, as a number
    if isinstance(eps, Tensor):
        if eps.shape != (x.shape[0],):
            raise ValueError(f"eps must be a number or a tensor of shape ({x.shape[0]},), got shape {tuple(eps.shape)}")
        if torch.isnan(eps).any() or (eps < 0).any():
            raise ValueError(f"eps must be >= 0 for every example, got min {eps.min().item():.3g}")
        eps = eps.to(device=x.device).view(-1, *([1] * (x.ndim - 1)))
    elif isinstance(eps, numbers.Real) and not isinstance(eps, bool):  # NumPy scalars too
        if not eps >= 0 or math.isinf(eps):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        eps = float(eps)
    else:
        raise ValueError(f"eps must be a number >= 0 or a tensor (N,), got {type(eps).__name__}")
    if domain is not None:
        lo, hi = domain
        x_lo, x_hi = (v.item() for v in torch.aminmax(x.detach()))  # one pass; plain floats compare fastest
        if not (x_lo >= lo and x_hi <= hi):  # also catches nan
            raise ValueError(f"x must lie in the domain [{lo}, {hi}] (got values in [{x_lo:.3g}, {x_hi:.3g}]); "
                             "undo normalization first, or pass domain=None")
    return eps


def _centre_radius(lower: Tensor, upper: Tensor, *, owned: bool = False) -> Interval:
    """``((lower + upper) / 2, (upper - lower) / 2)`` in two passes (lower <= upper is not checked).

    Overwrites ``lower`` and ``upper`` when ``owned`` and no gradient flows through them: a fresh
    input-sized tensor costs a page fault per 4 kB on a CPU, more than the arithmetic."""
    if owned and not (lower.requires_grad or upper.requires_grad):
        centre = lower.lerp_(upper, 0.5)
        return centre, upper.sub_(centre)
    centre = torch.lerp(lower, upper, 0.5)
    return centre, upper - centre


def _box_centre_radius(x: Tensor, eps: float | Tensor, domain: tuple[float, float] | None) -> Interval:
    """Centre and radius of :func:`input_box` (x and eps checked), in as few passes as it takes.

    With a number eps at most half the domain's width [a, b], the clipped box
    ``[max(x - eps, a), min(x + eps, b)]`` has centre ``(x + clamp(x, a + eps, b - eps)) / 2``
    (x itself away from the edges, halfway to the inner edge near them) and radius
    ``min(x + eps, b) - centre``: four passes over the input instead of six, which is most of
    what IBP costs beyond its two matrix products on a small MLP. That form is used when no
    gradient is recorded (certification, evaluation); under autograd (IBP training) the box is
    built end by end, so that a trained model does not depend on this speed-up's rounding."""
    checked = _checked_eps(x, eps, domain)
    if (domain is None or isinstance(checked, Tensor) or torch.is_grad_enabled()
            or not 2 * checked <= domain[1] - domain[0]):
        return _centre_radius(*_clipped_box(x, checked, domain), owned=True)
    a, b = domain
    centre = torch.clamp(x, a + checked, b - checked).lerp_(x, 0.5)
    return centre, torch.add(x, checked).clamp_(max=b).sub_(centre)


def ibp_layer_bounds(model: nn.Module, x: Tensor, eps: float | Tensor, *,
                     domain: tuple[float, float] | None = (0.0, 1.0)) -> list[Interval]:
    """Bounds on every layer's output over the clipped eps-box around each example.

    Args:
        model, x, eps, domain: as in :func:`ibp_bounds`.

    Returns:
        A list of ``(lower, upper)`` pairs: the input box first, then one per layer (the last
        on the logits); see :func:`interval_layer_bounds`.
    """
    lower, upper = input_box(x, eps, domain=domain)
    return interval_layer_bounds(model, lower, upper)


def ibp_bounds(model: nn.Module, x: Tensor, eps: float | Tensor, *,
               domain: tuple[float, float] | None = (0.0, 1.0), sound: bool = False) -> Interval:
    """Interval bounds on the logits over the L-inf box ``[x - eps, x + eps]`` clipped to [0, 1].

    Two passes through the layers (centre with W, radius with |W|); no per-example loop.

    Args:
        model: an ``nn.Sequential`` of Linear, Conv2d, ReLU, Sigmoid, Tanh, Flatten (Identity);
            maps x (N, ...) to logits (N, K). Its train/eval mode does not matter.
        x: inputs (N, ...), values in ``domain``.
        eps: L-inf radius, a number >= 0 or a tensor (N,) of per-example radii.
        domain: the inputs' valid range, the box is clipped to it; ``None``: no clipping.
        sound: round every step outward (:mod:`course_lib.rounding`), so that the bounds also
            hold for the network's exact real arithmetic, not only up to rounding; a little
            slower, and on CUDA without TF32 or cuDNN. Certification uses it.

    Returns:
        ``(lower, upper)``, each (N, K) on x's device: for every input x' of the box,
        ``lower <= model(x') <= upper`` (up to floating-point rounding; exactly with
        ``sound=True``). With eps = 0 both equal ``model(x)`` (without ``sound``).

    Raises:
        TypeError: for an unsupported layer, named with its index.
        ValueError: for eps < 0 or of the wrong shape, or x outside ``domain``.
    """
    layers = layers_of(model)
    if sound:
        with rounding.exact_kernels(x.device):
            mu, r = _sound_penultimate(layers, x, eps, domain, len(layers))
            return rounding.down(mu - r), rounding.up(mu + r)
    return _propagate(layers, *_box_centre_radius(x, eps, domain))


def _sound_penultimate(layers: list[nn.Module], x: Tensor, eps: float | Tensor,
                       domain: tuple[float, float] | None, depth: int) -> Interval:
    """Centre and radius after the first ``depth`` layers, rounded outward (:mod:`course_lib.rounding`)."""
    mu, r = rounding.centre_radius(*rounding.box(x, _checked_eps(x, eps, domain), domain))
    for layer in layers[:depth]:
        mu, r = rounding.step(layer, mu, r)
    return mu, r


# ---------------------------------------------------------------------------
# Certification
# ---------------------------------------------------------------------------

def _check_labels(x: Tensor, y: Tensor, num_classes: int | None = None) -> None:
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise ValueError(f"y must be int64 labels of shape ({x.shape[0]},), got "
                         f"{(y.dtype, tuple(y.shape)) if isinstance(y, Tensor) else type(y).__name__}")
    if num_classes is not None:
        low, high = (int(v) for v in torch.aminmax(y))
        if low < 0 or high >= num_classes:
            raise ValueError(f"y must hold classes in [0, {num_classes}) (the model's logits), "
                             f"got labels from {low} to {high}")


def margins_from_bounds(lower: Tensor, upper: Tensor, y: Tensor) -> Tensor:
    """Plain worst-case margins ``lower[y] - upper[j]`` from logit bounds.

    Args:
        lower, upper: logit bounds (N, K).
        y: int64 true labels (N,).

    Returns:
        (N, K): column j is a lower bound on ``z_y - z_j`` over the box; column y is +inf.
    """
    if lower.ndim != 2 or lower.shape != upper.shape:
        raise ValueError(f"lower and upper must be logit bounds (N, K) of one shape, got "
                         f"{tuple(lower.shape)} and {tuple(upper.shape)}")
    _check_labels(lower, y, lower.shape[1])
    margins = lower.gather(1, y[:, None]) - upper
    return margins.scatter(1, y[:, None], math.inf)


def worst_case_margins(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *,
                       fold_last: bool = True, domain: tuple[float, float] | None = (0.0, 1.0),
                       sound: bool = False) -> Tensor:
    """Lower bounds on the margins ``z_y - z_j`` over the clipped eps-box, one per class.

    With ``fold_last`` and a model ending in ``nn.Linear(W, b)``, the last layer is folded into
    the specification: with ``[l, u]`` the IBP box of the penultimate activations h,
    ``min over h in [l, u] of (w_y - w_j)^T h + b_y - b_j = c^T mu - |c|^T r + b_y - b_j`` with
    ``c = w_y - w_j``, exact for that box, hence >= the plain ``lower[y] - upper[j]`` (Gowal et
    al. 2018). Otherwise (or when the last layer is not Linear) the plain bound is returned.

    Args:
        model, x, eps, domain: as in :func:`ibp_bounds`.
        y: int64 true labels (N,).
        fold_last: fold the last Linear layer into the margins (tighter).
        sound: round outward, as in :func:`ibp_bounds`.

    Returns:
        margins (N, K): column j (j != y) a sound lower bound on ``model(x')_y - model(x')_j`` for
        every x' in the box; the true class's column is +inf (so ``margins.min(1)`` is the
        certificate's worst margin).

    Raises:
        ValueError: bad labels, eps or x (see :func:`ibp_bounds`); TypeError: unsupported layer.
    """
    _check_labels(x, y)
    layers = layers_of(model)
    if isinstance(layers[-1], nn.Linear):
        _check_labels(x, y, layers[-1].out_features)  # before W[y] indexes (y = -1 would be the last row)
    if not (fold_last and isinstance(layers[-1], nn.Linear)):
        margins = margins_from_bounds(*ibp_bounds(model, x, eps, domain=domain, sound=sound), y)
        return rounding.down(margins) if sound else margins
    if sound:
        with rounding.exact_kernels(x.device):
            mu, r = _sound_penultimate(layers, x, eps, domain, len(layers) - 1)
            margins = rounding.folded_margins(layers[-1].weight, layers[-1].bias, y, mu, r)
        return margins.scatter(1, y[:, None], math.inf)
    mu, r = _box_centre_radius(x, eps, domain)
    for layer in layers[:-1]:
        mu, r = _step(layer, mu, r)
    last: nn.Linear = layers[-1]
    W, b = last.weight, last.bias
    c = W[y][:, None, :] - W[None, :, :]  # (N, K, H): w_y - w_j
    margins = torch.einsum("nkh,nh->nk", c, mu) - torch.einsum("nkh,nh->nk", c.abs(), r)
    if b is not None:
        margins = margins + (b[y][:, None] - b[None, :])
    return margins.scatter(1, y[:, None], math.inf)


def worst_case_logits(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *,
                      fold_last: bool = True, domain: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """Worst-case logits for the robust loss: ``-margins`` with 0 in the true class's column.

    ``cross_entropy(worst_case_logits, y)`` upper-bounds the cross-entropy at every input of
    the box: it is the loss of logits in which every wrong class is as high relative to the true
    one as the bounds allow (Gowal et al. 2018's ``z_hat``; without folding it equals, up to a
    shift per row that the softmax ignores, ``lower`` in the true class and ``upper`` elsewhere).

    Returns:
        (N, K), differentiable with respect to the model's parameters.
    """
    margins = worst_case_margins(model, x, y, eps, fold_last=fold_last, domain=domain)
    return (-margins).scatter(1, y[:, None], 0.0)


def certify(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *, fold_last: bool = True,
            domain: tuple[float, float] | None = (0.0, 1.0), sound: bool = True) -> Tensor:
    """Whether IBP certifies each example: every worst-case margin is > 0.

    Certified means no input of the clipped eps-box is classified other than y (a tie counts as
    a change) by the network in exact arithmetic: the margins are rounded outward (``sound``,
    :mod:`course_lib.rounding`), so a certificate never rests on a rounding error. Not certified
    does not mean an attack exists: IBP is loose.

    Returns:
        bool (N,) on x's device.
    """
    with torch.no_grad():
        margins = worst_case_margins(model, x, y, eps, fold_last=fold_last, domain=domain, sound=sound)
        return margins.min(1).values > 0


def certified_accuracy(model: nn.Module, data, eps: float, *, batch_size: int = 256, fold_last: bool = True,
                       device: torch.device | str | None = None, sound: bool = True) -> float:
    """Fraction of examples IBP certifies at radius eps (a lower bound on the robust accuracy).

    Args:
        model: an IBP-supported ``nn.Sequential``; its train/eval mode does not matter.
        data: a pair of tensors ``(x, y)`` (split into batches of ``batch_size``) or an iterable
            of batches ``(x, y)`` (a DataLoader), x in [0, 1].
        eps: L-inf radius >= 0.
        batch_size: batch size when ``data`` is a pair of tensors.
        fold_last: use the folded (tighter) margins.
        device: where to compute; default the model's device.
        sound: round outward (see :func:`certify`).

    Returns:
        Certified accuracy in [0, 1]; at eps = 0 it is the clean accuracy (ties count as errors)
        up to examples whose margin is within rounding of 0.

    Raises:
        ValueError: if ``data`` holds no examples, or for a bad eps, batch_size or batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    certified = seen = 0
    batches: Iterable = _batches(data, batch_size)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        certified += int(certify(model, x, y, eps, fold_last=fold_last, sound=sound).sum())
        seen += y.shape[0]
    if seen == 0:
        raise ValueError("data holds no examples")
    return certified / seen
