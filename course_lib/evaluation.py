"""Accuracy: the one loop that counts correct predictions, clean or under an attack.

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

from course_lib.data import batches
from course_lib.device import model_device
from course_lib.models import evaluating

__all__ = ["accuracy", "count_correct"]


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
