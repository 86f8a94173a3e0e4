"""Small models sized for a laptop CPU.

Every builder returns an ``nn.Sequential`` made only of ``Flatten``, ``Linear``,
``Conv2d`` and ``ReLU``, so interval bound propagation (lecture 4) can walk it
layer by layer. Inputs are images (N, C, H, W) in [0, 1]; outputs are logits (N, K).

========== ============ ==========================================================
input      example      CNN (``cnn``)
========== ============ ==========================================================
(1, 8, 8)  digits       conv 16@3x3 -> conv 32@4x4/2 -> fc 100 -> fc K
(1, 28, 28) mnist5k     conv 16@4x4/2 -> conv 32@4x4/2 -> fc 100 -> fc K
(3, 32, 32) cifar10     same as 28x28 (the "small" model of Wong and Kolter 2018)
========== ============ ==========================================================
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from course_lib import _checks


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise _checks.ArgumentError
        return tuple(_checks.integer(s, "input_shape", ge=1) for s in shape)  # type: ignore[return-value]
    except (TypeError, ValueError):
        raise _checks.fail("input_shape", "(C, H, W) of positive integers", input_shape) from None


def _check_classes(num_classes: int) -> int:
    return _checks.integer(num_classes, "num_classes", ge=2)


def linear(input_shape: Sequence[int], num_classes: int = 10) -> nn.Sequential:
    """Multinomial logistic regression: ``Flatten`` then one ``Linear``.

    Examples:
        >>> linear((1, 8, 8), 10)(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    c, h, w = _check_shape(input_shape)
    num_classes = _check_classes(num_classes)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


def mlp(input_shape: Sequence[int], num_classes: int = 10,
        hidden: Sequence[int] = (100,)) -> nn.Sequential:
    """A fully connected ReLU network.

    Args:
        input_shape: (C, H, W) of one image.
        num_classes: K, the number of logits (>= 2).
        hidden: widths of the hidden layers; ``()`` gives logistic regression.

    Returns:
        ``nn.Sequential(Flatten, Linear, ReLU, ..., Linear)`` mapping (N, C, H, W) to (N, K).

    Examples:
        >>> net = mlp((1, 8, 8), 10, hidden=(32, 16))
        >>> net(torch.rand(2, 1, 8, 8)).shape, count_parameters(net)
        (torch.Size([2, 10]), 2778)
    """
    c, h, w = _check_shape(input_shape)
    num_classes = _check_classes(num_classes)
    try:
        widths = [_checks.integer(k, "hidden", ge=1) for k in hidden]
    except (TypeError, ValueError):
        raise _checks.fail("hidden", "a sequence of positive integer widths", hidden) from None
    layers: list[nn.Module] = [nn.Flatten()]
    width = c * h * w
    for k in widths:
        layers += [nn.Linear(width, k), nn.ReLU()]
        width = k
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(input_shape: Sequence[int], num_classes: int = 10) -> nn.Sequential:
    """A two-convolution ReLU network (see the module table).

    Args:
        input_shape: (C, H, W); H and W at least 8.
        num_classes: K, the number of logits (>= 2).

    Returns:
        ``nn.Sequential`` of Conv2d/ReLU/Flatten/Linear mapping (N, C, H, W) to (N, K).

    Examples:
        >>> cnn((1, 28, 28), 10)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    c, h, w = _check_shape(input_shape)
    num_classes = _check_classes(num_classes)
    if min(h, w) < 8:
        raise ValueError(f"cnn needs images of at least 8x8, got input_shape={tuple(input_shape)}")
    if max(h, w) <= 16:  # small images: keep resolution in the first layer
        convs = [nn.Conv2d(c, 16, 3, stride=1, padding=1), nn.ReLU(),
                 nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU()]
    else:
        convs = [nn.Conv2d(c, 16, 4, stride=2, padding=1), nn.ReLU(),
                 nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU()]
    with torch.no_grad():
        features = math.prod(nn.Sequential(*convs)(torch.zeros(1, c, h, w)).shape[1:])
    return nn.Sequential(*convs, nn.Flatten(), nn.Linear(features, 100), nn.ReLU(),
                         nn.Linear(100, num_classes))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``.

    Examples:
        >>> count_parameters(linear((1, 2, 2), 3))
        15
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextlib.contextmanager
def evaluating(model: nn.Module, *, grad: bool = True) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore its mode (even on an error).

    Args:
        model: any module; a plain callable (not an ``nn.Module``) is passed through.
        grad: ``False`` also turns autograd off in the block (``torch.no_grad``), for pure
            inference; attacks keep the default, as they differentiate through the model.

    Examples:
        >>> net = mlp((1, 8, 8), 10)
        >>> with evaluating(net, grad=False):
        ...     logits = net(torch.rand(4, 1, 8, 8))
        >>> net.training
        True
    """
    was_training = getattr(model, "training", None)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with contextlib.nullcontext() if grad else torch.no_grad():
            yield model
    finally:
        if isinstance(model, nn.Module) and was_training:
            model.train()
