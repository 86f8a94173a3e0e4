"""Backdoor attacks by data poisoning: triggers, poisoned training sets, attack success rate (lecture 7).

A backdoor attacker (BadNets, Gu et al. 2017) controls part of the training data. It stamps a
*trigger* on a fraction of the training images and relabels them as its *target* class; a network
trained on that set learns "trigger => target" beside the real task, so it keeps its clean accuracy
while any test image carrying the trigger is classified as the target.

=============== ================= ================================================================
math            code              meaning
=============== ================= ================================================================
x               ``x``, ``X``      images (N, C, H, W) or one image (C, H, W), values in [0, 1]
p, a            ``trigger``       a :class:`Trigger`: a pattern p (C or 1, h, w) and an opacity a
x'              ``apply_trigger`` ``x' = (1 - a) x + a p`` on the h x w window at ``position``
rho             ``rate``          the fraction of the *non-target* training examples poisoned
t               ``target_label``  the attacker's class
=============== ================= ================================================================

Two kinds of trigger:

* a **patch** (BadNets): a small pattern, a = 1, pasted over a corner: the window's pixels become
  the pattern's, every other pixel is left exactly as it was (:func:`patch_trigger`);
* a **blend** (Chen et al. 2017, "Targeted backdoor attacks ... using data poisoning"): a pattern
  the size of the whole image mixed in with a small opacity, ``x' = (1 - a) x + a p`` on every
  pixel (:func:`blend_trigger`).

Nothing here modifies its inputs in place; results are new tensors on the input's device.

The defences (lecture 10) live in :mod:`course_lib.backdoor_defences` and are importable from here:
``spectral_signature_scores``, ``spectral_filter``, ``activation_clusters``, ``precision_recall``,
``representations``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from course_lib import _checks, train
from course_lib.backdoor_defences import (ActivationClusters, activation_clusters, precision_recall,  # noqa: F401
                                          representations, spectral_filter, spectral_signature_scores)
from course_lib.data import batches
from course_lib.device import model_device
from course_lib.models import evaluating

POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left", "center")
PATCH_KINDS = ("checkerboard", "square")
Position = str | tuple[int, int]


@dataclass(frozen=True)
class Trigger:
    """A trigger pattern and its opacity.

    Attributes:
        pattern: float tensor (C, h, w) or (1, h, w) with values in [0, 1] (one channel is
            broadcast over the image's channels); kept on the CPU, moved to x's device when applied.
        alpha: opacity a in (0, 1]: the window becomes ``(1 - a) x + a * pattern``; 1 pastes the
            pattern over the window (a patch), a small a blends it in.
    """

    pattern: Tensor
    alpha: float = 1.0

    def __post_init__(self) -> None:
        p = self.pattern
        if not isinstance(p, Tensor) or not p.is_floating_point() or p.ndim != 3 or 0 in p.shape:
            got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
            raise ValueError(f"pattern must be a non-empty float tensor (C, h, w), got {got}")
        if not (p.min() >= 0 and p.max() <= 1):  # also catches nan
            raise ValueError("pattern must have values in [0, 1]")
        object.__setattr__(self, "alpha", _checks.number(self.alpha, "alpha", gt=0, le=1))

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the pattern."""
        return int(self.pattern.shape[1]), int(self.pattern.shape[2])


def patch_trigger(size: int = 3, *, kind: str = "checkerboard", channels: int = 1) -> Trigger:
    """A BadNets-style patch: a ``size`` x ``size`` pattern pasted at full opacity.

    Args:
        size: side of the square patch in pixels, >= 1.
        kind: ``"checkerboard"`` (white where row + col is even, black elsewhere, so the
            top-left pixel is white) or ``"square"`` (all white).
        channels: channels of the pattern (1 is broadcast over any number of image channels).

    Returns:
        A :class:`Trigger` with pattern (channels, size, size) and alpha 1.

    Examples:
        >>> patch_trigger(2).pattern
        tensor([[[1., 0.],
                 [0., 1.]]])
    """
    size = _checks.integer(size, "size", ge=1)
    kind = _checks.choice(kind, "kind", PATCH_KINDS)
    channels = _checks.integer(channels, "channels", ge=1)
    if kind == "square":
        pattern = torch.ones(channels, size, size)
    else:
        idx = torch.arange(size)
        pattern = ((idx[:, None] + idx[None, :]) % 2 == 0).float().expand(channels, size, size).clone()
    return Trigger(pattern, 1.0)


def blend_trigger(shape: Sequence[int], alpha: float = 0.2, *, seed: int = 0) -> Trigger:
    """A blended trigger (Chen et al. 2017): uniform random noise the size of the image.

    Applied at position (0, 0) (any position does, it covers the image) it gives
    ``x' = (1 - alpha) x + alpha * noise`` on every pixel.

    Args:
        shape: (C, H, W) of one image.
        alpha: opacity in (0, 1]; Chen et al. blend random noise with alpha = 0.2 in training.
        seed: seeds the noise pattern (uniform in [0, 1]).

    Returns:
        A :class:`Trigger` with pattern of ``shape`` and opacity ``alpha``.

    Examples:
        >>> trigger = blend_trigger((1, 28, 28), alpha=0.2)
        >>> trigger.pattern.shape, trigger.alpha
        (torch.Size([1, 28, 28]), 0.2)
    """
    shape = tuple(shape)
    try:
        if len(shape) != 3:
            raise _checks.fail("shape", "3 sizes", shape)
        shape = tuple(_checks.integer(s, "shape", ge=1) for s in shape)
    except _checks.ArgumentError:
        raise _checks.fail("shape", "(C, H, W) of positive integers", shape) from None
    gen = torch.Generator().manual_seed(_checks.integer(seed, "seed"))
    return Trigger(torch.rand(shape, generator=gen), alpha)


def _check_images(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be images (N, C, H, W) or one image (C, H, W), got shape {tuple(x.shape)}")
    if x.numel() and not (x.min() >= 0 and x.max() <= 1):  # also catches nan
        raise ValueError(f"{name} must lie in [0, 1] (got values in [{x.min().item():.3g}, "
                         f"{x.max().item():.3g}]); undo normalization first")


def trigger_window(image_size: tuple[int, int], trigger: Trigger,
                   position: Position = "bottom_right") -> tuple[int, int]:
    """The (row, col) of the top-left pixel of the trigger's window.

    Args:
        image_size: (H, W) of the images.
        trigger: the trigger, of size (h, w).
        position: ``"bottom_right"``, ``"bottom_left"``, ``"top_right"``, ``"top_left"`` (the
            window flush against that corner), ``"center"`` (top-left at ((H - h) // 2, (W - w) // 2)),
            or an explicit (row, col) of the window's top-left pixel.

    Returns:
        (row, col) with ``0 <= row <= H - h`` and ``0 <= col <= W - w``.

    Raises:
        ValueError: for an unknown position, or a window that does not fit in the image.

    Examples:
        >>> trigger_window((28, 28), patch_trigger(3)), trigger_window((28, 28), patch_trigger(3), "top_left")
        ((25, 25), (0, 0))
    """
    H, W = image_size
    h, w = trigger.size
    if h > H or w > W:
        raise ValueError(f"trigger of size {(h, w)} does not fit in images of size {(H, W)}")
    if isinstance(position, str):
        corners = {"bottom_right": (H - h, W - w), "bottom_left": (H - h, 0), "top_right": (0, W - w),
                   "top_left": (0, 0), "center": ((H - h) // 2, (W - w) // 2)}
        if position not in corners:
            raise ValueError(f"position must be one of {POSITIONS} or (row, col), got {position!r}")
        return corners[position]
    try:
        if not isinstance(position, (tuple, list)) or len(position) != 2:
            raise _checks.fail("position", "a pair", position)
        row, col = (_checks.integer(v, "position") for v in position)
    except _checks.ArgumentError:
        raise _checks.fail("position", f"one of {POSITIONS} or a pair of ints (row, col)", position) from None
    if not (0 <= row <= H - h and 0 <= col <= W - w):
        raise ValueError(f"a trigger of size {(h, w)} at position (row, col) = {(row, col)} does not fit "
                         f"in images of size {(H, W)}: need 0 <= row <= {H - h} and 0 <= col <= {W - w}")
    return row, col


def apply_trigger(x: Tensor, trigger: Trigger | None = None, *, position: Position = "bottom_right") -> Tensor:
    """Stamp ``trigger`` on images: ``x' = (1 - a) x + a p`` on the window, x elsewhere.

    Args:
        x: images (N, C, H, W) or one image (C, H, W), values in [0, 1]; not modified.
        trigger: a :class:`Trigger`; default ``patch_trigger()`` (a 3x3 checkerboard).
        position: where the window goes, see :func:`trigger_window`.

    Returns:
        A new tensor of x's shape, dtype and device, values in [0, 1]. With alpha = 1 the window's
        pixels equal the pattern exactly; pixels outside the window are x's, bitwise.

    Raises:
        ValueError: if x is not a float tensor of rank 3 or 4 in [0, 1], the pattern's channels are
            neither 1 nor x's, or the trigger does not fit at ``position``.

    Examples:
        >>> apply_trigger(torch.zeros(1, 1, 4, 4), patch_trigger(2))[0, 0]
        tensor([[0., 0., 0., 0.],
                [0., 0., 0., 0.],
                [0., 0., 1., 0.],
                [0., 0., 0., 1.]])
    """
    trigger = patch_trigger() if trigger is None else trigger
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a Trigger (see patch_trigger, blend_trigger), got {type(trigger).__name__}")
    _check_images(x)
    c = x.shape[-3]
    if trigger.pattern.shape[0] not in (1, c):
        raise ValueError(f"the trigger's pattern has {trigger.pattern.shape[0]} channels; "
                         f"the images have {c} (use 1 or {c})")
    row, col = trigger_window((x.shape[-2], x.shape[-1]), trigger, position)
    h, w = trigger.size
    pattern = trigger.pattern.to(device=x.device, dtype=x.dtype)
    out = x.detach().clone()
    window = out[..., row:row + h, col:col + w]
    if trigger.alpha == 1:
        window.copy_(pattern.expand_as(window))  # pasted: the window's pixels are the pattern's, exactly
    else:
        # a convex combination of two images in [0, 1]; the clamp only absorbs float rounding
        window.copy_(((1 - trigger.alpha) * window + trigger.alpha * pattern).clamp_(0, 1))
    return out


def _check_labels(y: Tensor, n: int) -> None:
    if not isinstance(y, Tensor) or y.dtype != torch.int64:
        raise ValueError(f"y must be an int64 tensor of labels, got {getattr(y, 'dtype', type(y).__name__)}")
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match X, got {tuple(y.shape)}")


def _check_target(target_label: int, y: Tensor, num_classes: int | None) -> int:
    """The target label as an int, checked against ``num_classes`` (default ``y.max() + 1``)."""
    if num_classes is None:
        num_classes = int(y.max().item()) + 1 if y.numel() else 0
    num_classes = _checks.integer(num_classes, "num_classes", ge=0)
    target = _checks.integer(target_label, "target_label")
    if not 0 <= target < num_classes:
        raise _checks.fail("target_label", f"a class in [0, {num_classes})", target_label)
    return target


def poison_count(rate: float, candidates: int) -> int:
    """How many examples a poisoning rate selects: ``floor(rate * candidates + 1/2)``.

    The nearest integer to ``rate * candidates``, halves rounded up (2.5 -> 3); rate 0 gives 0
    and rate 1 gives every candidate.

    Examples:
        >>> poison_count(0.1, 25), poison_count(0.1, 24)
        (3, 2)
    """
    rate = _checks.number(rate, "rate", ge=0, le=1)
    candidates = _checks.integer(candidates, "candidates", ge=0)
    return min(candidates, math.floor(rate * candidates + 0.5))


def poison_dataset(X: Tensor, y: Tensor, rate: float, target_label: int, *, trigger: Trigger | None = None,
                   position: Position = "bottom_right", seed: int = 0,
                   num_classes: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """BadNets poisoning: stamp the trigger on a fraction of the training set and relabel it as the target.

    The candidates are the examples whose label is not ``target_label`` (relabelling an example
    of the target class changes no label, and in this dirty-label attack the trigger is learnt from
    the relabelled examples; clean-label attacks, which poison only target-class images, need
    more than a stamp); ``poison_count(rate, n_candidates)`` of them,
    i.e. ``floor(rate * n_candidates + 1/2)``, are drawn uniformly without replacement with a
    generator seeded by ``seed`` (a ``torch.randperm`` of the candidates, on the CPU, so the
    choice does not depend on the device).

    Args:
        X: training images (N, C, H, W), values in [0, 1]; not modified.
        y: int64 labels (N,); not modified.
        rate: fraction of the non-target examples to poison, in [0, 1].
        target_label: the attacker's class, in [0, num_classes).
        trigger: default ``patch_trigger()``.
        position: where the trigger goes (see :func:`trigger_window`).
        seed: seeds the choice of the poisoned examples.
        num_classes: K; default ``y.max() + 1``.

    Returns:
        ``(X_poisoned, y_poisoned, poisoned_indices)``: new tensors on X's device; the poisoned
        examples carry the trigger and the label ``target_label``, the others are X's and y's
        bitwise; ``poisoned_indices`` is int64, sorted ascending.

    Raises:
        ValueError: for rate outside [0, 1], a target label out of range, images not (N, C, H, W)
            in [0, 1], labels not int64 (N,), or a trigger that does not fit.

    Examples:
        >>> X, y = torch.rand(10, 1, 8, 8), torch.arange(10) % 2
        >>> X_poisoned, y_poisoned, idx = poison_dataset(X, y, 0.4, target_label=0)
        >>> len(idx), y_poisoned[idx].tolist()
        (2, [0, 0])
    """
    _check_images(X, "X")
    if X.ndim != 4:
        raise ValueError(f"X must be a batch of images (N, C, H, W), got shape {tuple(X.shape)}")
    _check_labels(y, X.shape[0])
    target_label = _check_target(target_label, y, num_classes)
    trigger = patch_trigger() if trigger is None else trigger
    candidates = torch.nonzero(y.cpu() != target_label).flatten()
    k = poison_count(rate, candidates.numel())
    gen = torch.Generator().manual_seed(_checks.integer(seed, "seed"))
    chosen = candidates[torch.randperm(candidates.numel(), generator=gen)[:k]].sort().values
    trigger_window((X.shape[-2], X.shape[-1]), trigger, position)  # fails early, even when k = 0
    idx = chosen.to(X.device)
    X_poisoned, y_poisoned = X.detach().clone(), y.clone()
    if k:
        X_poisoned[idx] = apply_trigger(X[idx], trigger, position=position)
        y_poisoned[idx] = target_label
    return X_poisoned, y_poisoned, idx


def _predict(model: nn.Module, X: Tensor, batch_size: int) -> Tensor:
    """argmax predictions (N,) on the model's device, in eval mode (the mode is restored)."""
    batch_size = _checks.integer(batch_size, "batch_size", ge=1)
    device = model_device(model)
    with evaluating(model, grad=False):
        preds = [model(X[i:i + batch_size].to(device)).argmax(1) for i in range(0, X.shape[0], batch_size)]
    return torch.cat(preds)


def _logit_count(model: nn.Module, X: Tensor) -> int:
    """K, the width of the model's logits (one forward pass of one image)."""
    with evaluating(model, grad=False):
        return int(model(X[:1].to(model_device(model))).shape[1])


def clean_accuracy(model: nn.Module, X: Tensor, y: Tensor, *, batch_size: int = 256) -> float:
    """Fraction of the clean images the model classifies correctly: :func:`course_lib.train.accuracy`.

    Args:
        model: maps (N, C, H, W) to logits (N, K); evaluated in eval mode, its mode restored.
        X: images (N, C, H, W) in [0, 1]; y: int64 labels (N,).
        batch_size: images per forward pass.

    Returns:
        Accuracy in [0, 1].
    """
    _check_images(X, "X")
    if X.ndim != 4 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty batch of images (N, C, H, W), got shape {tuple(X.shape)}")
    _check_labels(y, X.shape[0])
    return train.accuracy(model, batches((X, y), batch_size))


def attack_success_rate(model: nn.Module, X: Tensor, y: Tensor, target_label: int, *,
                        trigger: Trigger | None = None, position: Position = "bottom_right",
                        batch_size: int = 256, num_classes: int | None = None) -> float:
    """Attack success rate (ASR): the fraction of triggered non-target images classified as the target.

    Test images whose true label is ``target_label`` are left out: "classified as the target"
    would be a success of the clean model there.

    Args:
        model: maps (N, C, H, W) to logits (N, K); evaluated in eval mode, its mode restored.
        X: clean test images (N, C, H, W) in [0, 1]; not modified. y: int64 labels (N,).
        target_label: the attacker's class.
        trigger, position: as in :func:`poison_dataset` (default ``patch_trigger()`` bottom right).
        batch_size: images per forward pass.
        num_classes: K; default the width of the model's logits.

    Returns:
        ASR in [0, 1].

    Raises:
        ValueError: for bad images, labels or target, or when every label is the target.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
        >>> X, y = torch.rand(10, 1, 8, 8), torch.arange(10) % 2
        >>> 0 <= attack_success_rate(model, X, y, target_label=0) <= 1
        True
    """
    _check_images(X, "X")
    if X.ndim != 4:
        raise ValueError(f"X must be a batch of images (N, C, H, W), got shape {tuple(X.shape)}")
    _check_labels(y, X.shape[0])
    if num_classes is None and X.shape[0] > 0:  # not y.max() + 1: a subset may lack the top classes
        num_classes = _logit_count(model, X)
    target_label = _check_target(target_label, y, num_classes)
    keep = (y != target_label).to(X.device)
    if not keep.any():
        raise ValueError(f"every test label is the target {target_label}: the attack success rate is undefined")
    triggered = apply_trigger(X[keep], trigger, position=position)
    preds = _predict(model, triggered, batch_size)
    return (preds == target_label).float().mean().item()
