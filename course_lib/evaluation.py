"""Accuracy: the one loop that counts correct predictions, clean or under an attack (and the one
that counts certificates, :func:`fraction_certified`, for IBP's and CROWN's certified accuracy).

Every accuracy of the library comes from :func:`accuracy`: :func:`course_lib.train.evaluate`
(which re-exports it as ``cl.train.accuracy``), :func:`course_lib.attacks.accuracy_under_attack`,
:func:`course_lib.zoo.robust_accuracies` and :func:`course_lib.backdoor.clean_accuracy`. It sits
below the attacks (an attack is any callable passed in), so that none of them imports another
in a circle.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from course_lib import _checks
from course_lib.data import batches
from course_lib.device import model_device
from course_lib.models import evaluating

__all__ = ["accuracy", "count_correct", "fraction_certified"]


def count_correct(logits: Tensor, y: Tensor) -> int:
    """How many rows of ``logits`` (N, K) have their largest entry at the label ``y`` (N,)."""
    return (logits.argmax(1) == y).sum().item()


def accuracy(model: nn.Module, data, *, attack: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
             device: torch.device | str | None = None) -> float:
    """Fraction of examples ``model`` classifies correctly, after ``attack`` if one is given.

    The one accuracy loop of the library: :func:`course_lib.attacks.accuracy_under_attack`,
    :func:`course_lib.zoo.robust_accuracies` and the backdoor's clean accuracy all call it.

    Args:
        model: maps x (N, C, H, W) to logits (N, K); evaluated in eval mode (its mode is
            restored afterwards).
        data: a DataLoader (or any iterable) of batches ``(x, y)``, or a pair of tensors
            ``(x, y)`` (cut into batches of 256).
        attack: ``attack(model, x, y) -> x_adv``, run on each batch (with gradients);
            ``None`` gives the clean accuracy.
        device: where to compute; default the model's device.

    Returns:
        Accuracy in [0, 1].

    Raises:
        ValueError: if ``data`` holds no examples.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, y = torch.rand(6, 1, 2, 2), torch.zeros(6, dtype=torch.int64)
        >>> 0.0 <= accuracy(net, (x, y)) <= 1.0
        True
        >>> from course_lib.attacks import fgsm
        >>> accuracy(net, (x, y), attack=lambda m, x, y: fgsm(m, x, y, eps=1.0)) <= accuracy(net, (x, y))
        True
    """
    if device is None:
        device = model_device(model)
    correct = seen = 0
    with evaluating(model):
        for x, y in batches(data):
            x, y = x.to(device), y.to(device)
            if attack is not None:
                x = attack(model, x, y)
            with torch.no_grad():
                correct += count_correct(model(x), y)
            seen += y.shape[0]
    if seen == 0:
        raise ValueError("data holds no examples")
    return correct / seen


def fraction_certified(certify: Callable[[Tensor, Tensor], Tensor], data, *, model: nn.Module, batch_size: int,
                       device: torch.device | str | None = None) -> float:
    """Fraction of examples ``certify(x, y)`` (a bool (N,) per batch) says yes to.

    The loop behind :func:`course_lib.ibp.certified_accuracy` and
    :func:`course_lib.crown.certified_accuracy`; ``data`` as in :func:`accuracy`, a pair of
    tensors cut into batches of ``batch_size`` (an integer >= 1); batches go to ``device``,
    by default the model's.

    Raises:
        ValueError: if ``data`` holds no examples, or for a bad batch_size.

    Examples:
        >>> x, y = torch.rand(6, 2), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> fraction_certified(lambda x, y: y == 0, (x, y), model=nn.Linear(2, 2), batch_size=4)
        0.5
    """
    batch_size = _checks.integer(batch_size, "batch_size", ge=1)
    if device is None:
        device = model_device(model)
    certified = seen = 0
    for x, y in batches(data, batch_size):
        x, y = x.to(device), y.to(device)
        certified += int(certify(x, y).sum())
        seen += y.shape[0]
    if seen == 0:
        raise ValueError("data holds no examples")
    return certified / seen
