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

The layer types live in one table, :mod:`course_lib.layers` (``Linear``, ``Conv2d``, ``ReLU``,
``Sigmoid``, ``Tanh``, ``Flatten``, ``Identity``; a model is an ``nn.Sequential`` of them, nested
ones flattened): each entry holds the layer's interval rule and its sound-rounding rule, and
registering a type there adds it to IBP, sound IBP and the verifier at once. Tensors follow the
input's device and dtype; every function is differentiable (IBP training back-propagates through
the bounds).

The file reads like the lecture: the reference algorithm first (one layer, a network, the input
box, margins, certification), then the fast paths (fewer passes, in-place work, outward
rounding) in the section marked as such at the end.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from course_lib import _checks, layers, rounding
from course_lib.evaluation import fraction_certified
from course_lib.intervals import as_tensor, box_centre_radius, centre_radius, check_interval, checked_eps
from course_lib.intervals import (input_box, interval_conv2d, interval_monotone,  # noqa: F401  (public here
                                  interval_sigmoid, interval_tanh)  # since lecture 4)
from course_lib.layers import altered_forward, layers_of  # noqa: F401  (public here since lecture 4)

Interval = tuple[Tensor, Tensor]


def __getattr__(name: str):
    # the supported types are the table's, read when asked (a registered type counts)
    if name == "SUPPORTED":
        return layers.supported()
    if name == "MONOTONE":
        return tuple(t for t, rule in layers.TABLE.items() if rule.kind == "monotone")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ===========================================================================
# The reference algorithm
# ===========================================================================

# ---------------------------------------------------------------------------
# One layer
# ---------------------------------------------------------------------------

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

    Examples:
        >>> lo, hi = interval_affine(2.0, 4.0, -5.0, 1.0)  # [2, 4] * (-5) + 1
        >>> float(lo), float(hi)
        (-19.0, -9.0)
        >>> lo, hi = interval_affine(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]),
        ...                          torch.tensor([[1.0, -1.0]]))
        >>> lo.tolist(), hi.tolist()
        ([-1.0], [1.0])
    """
    like = next((t for t in (lower, upper, W) if isinstance(t, Tensor)), None)
    lower, upper = as_tensor(lower, "lower", like), as_tensor(upper, "upper", like)
    W = as_tensor(W, "W", lower)
    check_interval(lower, upper)
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
        b = as_tensor(b, "b", mu_out)
        if b.ndim > 1 or (b.ndim == 1 and W.ndim == 2 and b.shape[0] != W.shape[0]):
            raise ValueError(f"b must be a number or a vector ({W.shape[0] if W.ndim == 2 else ''},), "
                             f"got shape {tuple(b.shape)}")
        mu_out = mu_out + b
    return mu_out - r_out, mu_out + r_out


def interval_relu(lower, upper) -> Interval:
    """``[relu(lower), relu(upper)]``: see :func:`interval_monotone`.

    Examples:
        >>> lo, hi = interval_relu(torch.tensor([-1.0, -2.0]), torch.tensor([1.0, -1.0]))
        >>> lo.tolist(), hi.tolist()
        ([0.0, 0.0], [1.0, 0.0])
    """
    return interval_monotone(lower, upper, torch.relu)


# ---------------------------------------------------------------------------
# Through a network, in centre/radius form (the table's rule layer by layer)
# ---------------------------------------------------------------------------

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
    sequence = layers_of(model)
    check_interval(lower, upper)
    mu, r = (upper + lower) / 2, (upper - lower) / 2
    out = [(lower, upper)]
    for layer in sequence:
        mu, r = layers.interval_step(layer, mu, r)
        out.append((mu - r, mu + r))
    return out


def interval_network(model: nn.Module, lower: Tensor, upper: Tensor) -> Interval:
    """Bounds on the model's output for the box ``[lower, upper]``: the last pair of
    :func:`interval_layer_bounds`, computed without keeping the others."""
    check_interval(lower, upper)
    return _propagate(layers_of(model), *centre_radius(lower, upper))


# ---------------------------------------------------------------------------
# The input box and the bounds on the logits
# ---------------------------------------------------------------------------

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
        model: an ``nn.Sequential`` of the layer types in :mod:`course_lib.layers` (Linear,
            Conv2d, ReLU, Sigmoid, Tanh, Flatten, Identity);
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

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> x = torch.rand(5, 1, 2, 2)
        >>> lower, upper = ibp_bounds(model, x, 0.1)
        >>> z = model(x)
        >>> lower.shape, bool((lower <= z + 1e-6).all() and (z <= upper + 1e-6).all())
        (torch.Size([5, 2]), True)
    """
    sequence = layers_of(model)
    if sound:
        with rounding.exact_kernels(x.device):
            mu, r = _sound_propagate(sequence, x, eps, domain)
            return rounding.down(mu - r), rounding.up(mu + r)
    return _propagate(sequence, *box_centre_radius(x, eps, domain))


# ---------------------------------------------------------------------------
# Margins and certification
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

    Examples:
        >>> margins_from_bounds(torch.tensor([[2.0, 0.0]]), torch.tensor([[3.0, 1.5]]), torch.tensor([0])).tolist()
        [[inf, 0.5]]
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

    Examples:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> margins = worst_case_margins(model, torch.rand(4, 2), torch.zeros(4, dtype=torch.int64), 0.05)
        >>> margins.shape, bool(torch.isinf(margins[:, 0]).all())
        (torch.Size([4, 2]), True)
    """
    _check_labels(x, y)
    sequence = layers_of(model)
    last = sequence[-1]
    if isinstance(last, nn.Linear):
        _check_labels(x, y, last.out_features)  # before W[y] indexes (y = -1 would be the last row)
    if not (fold_last and isinstance(last, nn.Linear)):
        margins = margins_from_bounds(*ibp_bounds(model, x, eps, domain=domain, sound=sound), y)
        return rounding.down(margins) if sound else margins
    if sound:
        with rounding.exact_kernels(x.device):
            mu, r = _sound_propagate(sequence[:-1], x, eps, domain)
            margins = layers.folded_margins(last, y, mu, r, sound=True)
        return margins.scatter(1, y[:, None], math.inf)
    mu, r = _propagate_centre_radius(sequence[:-1], *box_centre_radius(x, eps, domain))
    return layers.folded_margins(last, y, mu, r).scatter(1, y[:, None], math.inf)


def worst_case_logits(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *,
                      fold_last: bool = True, domain: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """Worst-case logits for the robust loss: ``-margins`` with 0 in the true class's column.

    ``cross_entropy(worst_case_logits, y)`` upper-bounds the cross-entropy at every input of
    the box: it is the loss of logits in which every wrong class is as high relative to the true
    one as the bounds allow (Gowal et al. 2018's ``z_hat``; without folding it equals, up to a
    shift per row that the softmax ignores, ``lower`` in the true class and ``upper`` elsewhere).

    Returns:
        (N, K), differentiable with respect to the model's parameters.

    Examples:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> y = torch.tensor([1, 0])
        >>> worst_case_logits(model, torch.rand(2, 2), y, 0.1).gather(1, y[:, None]).tolist()
        [[0.0], [0.0]]
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

    Examples:
        >>> model = nn.Sequential(nn.Linear(2, 2))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.eye(2)), model[0].bias.zero_()
        >>> certify(model, torch.tensor([[0.9, 0.1]]), torch.tensor([0]), 0.1).tolist()
        [True]
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

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, y = torch.rand(10, 1, 2, 2), torch.zeros(10, dtype=torch.int64)
        >>> 0.0 <= certified_accuracy(model, (x, y), 0.01, batch_size=4) <= 1.0
        True
    """
    return fraction_certified(lambda x, y: certify(model, x, y, eps, fold_last=fold_last, sound=sound), data, model=model,
                              batch_size=batch_size, device=device)


# ===========================================================================
# Fast paths: fewer passes, in-place work, and the sound (outward-rounded) walk
# ===========================================================================
#
# The same algebra as above; only how many passes over memory it takes, and where a tensor is
# reused, differ. ``ibp_bounds(..., sound=True)`` and the sound folded margins walk the layers
# with the table's sound rules (course_lib.layers -> course_lib.rounding), never back here.

def _propagate_centre_radius(sequence: list[nn.Module], mu: Tensor, r: Tensor) -> Interval:
    """Centre and radius after ``sequence``; ``mu`` and ``r`` must be the propagation's own."""
    for layer in sequence:
        mu, r = layers.rule_for(layer).interval(layer, mu, r)  # layers_of checked every rule exists
    return mu, r


def _propagate(sequence: list[nn.Module], mu: Tensor, r: Tensor) -> Interval:
    mu, r = _propagate_centre_radius(sequence, mu, r)
    return mu - r, mu + r


def _sound_propagate(sequence: list[nn.Module], x: Tensor, eps: float | Tensor,
                     domain: tuple[float, float] | None) -> Interval:
    """Centre and radius after ``sequence``, rounded outward (the table's sound rules)."""
    mu, r = rounding.centre_radius(*rounding.box(x, checked_eps(x, eps, domain), domain))
    for layer in sequence:
        mu, r = layers.sound_step(layer, mu, r)
    return mu, r
