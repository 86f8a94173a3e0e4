"""What every white-box attack shares: the input contract, the attack losses, the input gradient.

The losses an attack ascends, per example, on the logits z (N, K) and the labels y (N,):

* ``"ce"``: ``-log softmax(z)_y``, the training loss; its gradient vanishes when the softmax saturates;
* ``"margin"``: ``max_{j != y} z_j - z_y`` (Carlini and Wagner 2017), > 0 exactly when misclassified;
* ``"dlr"``: ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)`` (Croce and Hein 2020), K >= 3.

(pi sorts the logits in decreasing order.) The DLR (difference of logits ratio) loss is the margin
divided by the spread of the top three logits: scaling the logits by c > 0 or shifting them all by
a constant leaves it unchanged (up to the 1e-12), so a model cannot hide behind large or
saturated logits, and it is > 0 exactly when the example is misclassified.

:mod:`course_lib.attacks` (FGSM, PGD) and :mod:`course_lib.apgd` both build on this module, so
that neither imports the other in a circle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LOSSES", "dlr_loss"]

LOSSES = ("ce", "margin", "dlr")
"""The attack losses: ``"ce"``, the cross-entropy; ``"margin"``, ``max_{j != y} z_j - z_y`` on the
logits z; ``"dlr"``, the difference of logits ratio (:func:`dlr_loss`, K >= 3 classes)."""


def _check_inputs(x: Tensor, y: Tensor) -> None:
    """x: a non-empty float batch (N, ...) in [0, 1]; y: int64 labels of shape (N,)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    if not isinstance(y, Tensor) or y.dtype != torch.int64:
        raise ValueError(f"y must be an int64 tensor of labels, got {getattr(y, 'dtype', type(y).__name__)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    lo, hi = torch.aminmax(x)
    if not (lo >= 0 and hi <= 1):  # also catches nan
        raise ValueError(f"x must lie in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); undo normalization first")


def _best_other(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{j != y} z_j`` per row of logits (N, K): the strongest wrong class's logit, shape (N,)."""
    return logits.scatter(1, y[:, None], float("-inf")).amax(1)


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (Croce and Hein 2020), one value per example.

    ``DLR(z, y) = -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)``, pi sorting z decreasingly.

    Args:
        logits: z, shape (N, K) with K >= 3.
        y: int64 labels, shape (N,).

    Returns:
        Shape (N,); > 0 exactly when the example is misclassified; unchanged (up to the 1e-12)
        when z is scaled by c > 0 or shifted by a constant.

    Raises:
        ValueError: if K < 3 (the ratio needs a third logit).

    Examples:
        >>> z = torch.tensor([[3.0, 1.0, 0.0], [1.0, 3.0, 0.0]])
        >>> dlr_loss(z, torch.tensor([0, 0]))  # -(3 - 1) / 3 and -(1 - 3) / 3
        tensor([-0.6667,  0.6667])
        >>> torch.allclose(dlr_loss(10 * z - 5, torch.tensor([0, 0])), dlr_loss(z, torch.tensor([0, 0])))
        True
    """
    if logits.ndim != 2 or logits.shape[1] < 3:
        raise ValueError(f"loss='dlr' needs logits (N, K) with K >= 3 classes, got shape {tuple(logits.shape)}")
    top = logits.topk(3, dim=1).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    return -(true - _best_other(logits, y)) / (top[:, 0] - top[:, 2] + 1e-12)


def _per_example_loss(logits: Tensor, y: Tensor, kind: str) -> Tensor:
    """The attack loss ``kind`` (one of :data:`LOSSES`) of each example, shape (N,)."""
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if kind == "dlr":
        return dlr_loss(logits, y)
    return _best_other(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


def _loss(logits: Tensor, y: Tensor, kind: str) -> Tensor:
    """The attack loss, summed over the batch (a scalar), so each example's gradient is unscaled by N.

    ``"ce"``: the cross-entropy. ``"margin"``: ``max_{j != y} z_j - z_y`` per example (Carlini and
    Wagner 2017), > 0 exactly when the example is misclassified; unlike the cross-entropy, its
    gradient does not vanish when the softmax saturates. ``"dlr"``: :func:`dlr_loss` (K >= 3).
    logits: (N, K), K >= 2; y: (N,) int64.
    """
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    return _per_example_loss(logits, y, kind).sum()


def _input_gradient(model: nn.Module, x: Tensor, y: Tensor, loss: str = "ce") -> Tensor:
    """Gradient of the summed attack loss (:func:`_loss`) with respect to x only (no parameter .grad is touched)."""
    with torch.enable_grad():  # attacks also run inside torch.no_grad() evaluation loops
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(_loss(model(x), y, loss), x)
    return grad


def _per_example_norm(t: Tensor) -> Tensor:
    """L2 norm of each example, shaped (N, 1, ..., 1) to broadcast against t."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))
