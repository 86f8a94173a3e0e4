"""What a bound is a bound on: the specification matrix ``C`` (N, S, K) of ``C @ logits``.

A verifier bounds ``C @ model(x')`` over a set of inputs; row ``s`` of ``C[n]`` is one linear
function of example n's K logits. The two that matter most:

* the identity (``C = None``): the logits themselves;
* the margins (:func:`margin_spec`): rows ``e_y - e_j`` for every ``j != y``, so that ``C @ z``
  are the K - 1 margins ``z_y - z_j``; an example is certified when every one has a lower bound
  > 0, and the last Linear layer folds into the specification (``C W``).

:func:`identity_spec` gives the rows ``[I; -I]`` that bound every unit of a hidden layer from
both sides (CROWN's pre-activation bounds).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from course_lib import _checks


def check_spec(C, n: int, k: int, like: Tensor) -> Tensor:
    """C checked and in like's dtype and device: (N, S, K) finite real; ``None`` is the identity (S = K).

    Raises:
        ValueError: for any other shape, an empty S, or complex or non-finite entries (naming C).
    """
    if C is None:
        return torch.eye(k, dtype=like.dtype, device=like.device).expand(n, k, k)
    if not isinstance(C, Tensor) or C.ndim != 3 or C.shape[0] != n or C.shape[2] != k or C.shape[1] == 0:
        shown = tuple(C.shape) if isinstance(C, Tensor) else type(C).__name__
        raise ValueError(f"C must be None or a tensor of shape (N, S, K) = ({n}, S, {k}) (N examples, "
                         f"S >= 1 specifications, K logits), got {shown}")
    if C.is_complex() or not torch.isfinite(C).all():
        raise ValueError("C must hold finite real numbers")
    return C.to(dtype=like.dtype, device=like.device)


def identity_spec(batch: int, shape: tuple[int, ...], like: Tensor, units: slice = slice(None)) -> Tensor:
    """Rows ``[I; -I]`` on a layer of ``shape``: (batch, 2 u, *shape) for the ``u`` units of the
    slice ``units`` of the ``m = prod(shape)`` (all by default), in like's dtype and device."""
    m = math.prod(shape)
    eye = torch.eye(m, dtype=like.dtype, device=like.device)[units]
    return torch.cat([eye, -eye]).view(1, 2 * eye.shape[0], *shape).expand(batch, -1, *shape)


def other_classes(y: Tensor, num_classes: int) -> Tensor:
    """(N, K-1) int64: the classes j != y of each example, in increasing order.

    Args:
        y: int64 labels (N,), in [0, num_classes).
        num_classes: K, an integer >= 2.

    Examples:
        >>> other_classes(torch.tensor([1, 0]), 3).tolist()
        [[0, 2], [1, 2]]
    """
    num_classes = _checks.integer(num_classes, "num_classes", ge=2)
    classes = torch.arange(num_classes, device=y.device).expand(y.shape[0], num_classes)
    return classes[classes != y[:, None]].view(y.shape[0], num_classes - 1)


def margin_spec(y: Tensor, num_classes: int) -> Tensor:
    """The margin specification: rows ``e_y - e_j`` for the classes ``j != y``, in increasing order.

    ``C @ logits`` is the (N, K-1) margins ``z_y - z_j``; ``crown_bounds(model, x, eps, C=C)[0]``
    bounds them from below over the eps-ball, so the last Linear layer is folded into the
    specification (``C W``) instead of being bounded on its own. An example is certified when
    every one of its margin lower bounds is > 0.

    Args:
        y: int64 labels (N,), in [0, num_classes).
        num_classes: K, the number of logits, >= 2.

    Returns:
        C: float32 (N, K-1, K) on y's device (``crown_bounds`` moves it to x's dtype).

    Raises:
        ValueError: for num_classes < 2 or labels that are not int64 (N,) in [0, K).

    Examples:
        >>> margin_spec(torch.tensor([1]), 3).tolist()
        [[[-1.0, 1.0, 0.0], [0.0, 1.0, -1.0]]]
    """
    num_classes = _checks.integer(num_classes, "num_classes", ge=2)
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.ndim != 1:
        raise ValueError(f"y must be int64 labels of shape (N,), got "
                         f"{(y.dtype, tuple(y.shape)) if isinstance(y, Tensor) else type(y).__name__}")
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        low, high = (int(v) for v in torch.aminmax(y))
        raise ValueError(f"y must hold classes in [0, {num_classes}), got labels from {low} to {high}")
    eye = torch.eye(num_classes, device=y.device)
    return eye[y][:, None, :] - eye[other_classes(y, num_classes)]
