"""Robust accuracy as the worst case over several attacks (AutoAttack's principle; lecture 8).

An attack that fails does not show that no attack succeeds: a gradient attack can fail on a
model that masks its gradients. AutoAttack (Croce and Hein 2020) therefore counts an example as
robust only if it is classified correctly *and every attack of an ensemble fails on it*. The
attacks run in order, each on the examples still robust (cheap ones first), and each example is
credited to the first attack that broke it.

Attacks returning points outside the threat model (outside the eps-ball or [0, 1]) are refused
with an error: such a bug would inflate the attack's success and deflate the robust accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from course_lib import _checks
from course_lib.attack_base import _check_inputs
from course_lib.data import batches
from course_lib.device import model_device
from course_lib.models import evaluating

__all__ = ["MISCLASSIFIED", "ROBUST", "RobustAccuracy", "robust_accuracy"]

ROBUST = -1
"""Code in :attr:`RobustAccuracy.broken_by` of an example that every attack failed on."""
MISCLASSIFIED = -2
"""Code in :attr:`RobustAccuracy.broken_by` of an example misclassified already without an attack."""

EpsAttack = Callable[[nn.Module, Tensor, Tensor, float], Tensor]


@dataclass(frozen=True)
class RobustAccuracy:
    """The result of :func:`robust_accuracy`. How to read it:

    Attributes:
        robust_accuracy: fraction of examples classified correctly and not broken by any attack.
        clean_accuracy: fraction classified correctly without an attack (>= robust_accuracy).
        broken_by: int64 (N,), on the CPU, in the order of the data: per example, the index in
            ``attack_names`` of the first attack that broke it, :data:`ROBUST` (-1) if none did,
            :data:`MISCLASSIFIED` (-2) if it was misclassified without an attack.
        attack_names: the attacks' names, in the order they ran.
        counts: per attack name, the number of examples it broke that the attacks before it had
            not (so ``sum(counts.values()) == N * (clean_accuracy - robust_accuracy)``).
    """

    robust_accuracy: float
    clean_accuracy: float
    broken_by: Tensor
    attack_names: tuple[str, ...]
    counts: dict[str, int]

    def labels(self) -> list[str]:
        """``broken_by`` in words: per example ``"robust"``, ``"misclassified"`` or the attack's name."""
        words = {ROBUST: "robust", MISCLASSIFIED: "misclassified"}
        return [words.get(c, self.attack_names[c] if c >= 0 else "?") for c in self.broken_by.tolist()]


def _attack_list(attacks) -> list[tuple[str, EpsAttack]]:
    pairs = list(attacks.items()) if isinstance(attacks, Mapping) else list(attacks)
    if not pairs:
        raise ValueError("attacks must name at least one attack")
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) and callable(pair[1])):
            raise ValueError(f"attacks must map names (str) to attack callables, got {pair!r}")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"attack names must be distinct, got {names}")
    return pairs


def _check_adversarial(x_adv: object, x: Tensor, eps: float, norm: str, name: str) -> None:
    """Refuse an attack's output that is not an input of x's kind inside the eps-ball and [0, 1]."""
    if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape or x_adv.dtype != x.dtype:
        raise ValueError(f"attack {name!r} must return a tensor of x's shape {tuple(x.shape)} and dtype "
                         f"{x.dtype}, got {getattr(x_adv, 'dtype', type(x_adv).__name__)} "
                         f"{tuple(getattr(x_adv, 'shape', ()))}")
    lo, hi = torch.aminmax(x_adv)
    if not (lo >= 0 and hi <= 1):  # also catches nan
        raise ValueError(f"attack {name!r} returned inputs outside [0, 1] (values in [{lo:.3g}, {hi:.3g}])")
    delta = (x_adv.to(x.device) - x).flatten(1)
    # up to one rounding of each pixel (see course_lib.attacks): 1e-6 per coordinate
    dist, tol = (delta.abs().amax(1), 1e-6) if norm == "linf" else (delta.norm(dim=1), 1e-6 * math.sqrt(delta.shape[1]))
    if (dist > eps + tol).any():
        raise ValueError(f"attack {name!r} returned inputs outside the {norm} ball of radius eps={eps:g} "
                         f"(largest distance {dist.max():.6g}); refusing them, they would inflate its success")


def robust_accuracy(model: nn.Module, data, eps: float, attacks: Mapping[str, EpsAttack] | Iterable, *,
                    norm: str = "linf", device: torch.device | str | None = None) -> RobustAccuracy:
    """Accuracy under the worst case of several attacks, per example, and which attack broke what.

    An example counts as robust only if the model classifies it correctly and every attack fails
    on it. The attacks run in the given order, each only on the examples no earlier attack broke.

    Args:
        model: maps x (N, C, H, W) to logits (N, K); evaluated (and attacked) in eval mode, its
            mode restored afterwards.
        data: a DataLoader (or any iterable) of batches ``(x, y)``, or a pair of tensors ``(x, y)``
            (cut into batches of 256); inputs in [0, 1], int64 labels.
        eps: radius >= 0 passed to every attack, in input units.
        attacks: a mapping name -> ``attack(model, x, y, eps) -> x_adv`` (or a sequence of
            ``(name, attack)`` pairs), in the order to run them, e.g.
            ``{"apgd-ce": lambda m, x, y, e: apgd(m, x, y, e, 100), "apgd-dlr": ...}``.
        norm: the threat model's norm, ``"linf"`` or ``"l2"``; every attack's output is checked
            to lie within eps of x in it (plus 1e-6 per coordinate for rounding) and in [0, 1].
        device: where to compute; default the model's device.

    Returns:
        A :class:`RobustAccuracy`: robust and clean accuracy, per example the attack that broke it,
        per attack the number of examples it broke first.

    Raises:
        ValueError: for eps < 0, an unknown norm, no attacks or repeated names, inputs outside
            [0, 1], data without examples, or an attack returning points outside the eps-ball or
            [0, 1] (or of another shape or dtype).

    Examples:
        >>> from course_lib.attacks import fgsm, pgd
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(16, 1, 2, 2), torch.randint(3, (16,))
        >>> result = robust_accuracy(model, (x, y), 0.2, {"fgsm": fgsm,
        ...     "pgd": lambda m, x, y, e: pgd(m, x, y, e, alpha=e / 4, steps=10)})
        >>> result.robust_accuracy <= result.clean_accuracy, len(result.broken_by)
        (True, 16)
    """
    eps = _checks.number(eps, "eps", ge=0)
    norm = _checks.choice(norm, "norm", ("linf", "l2"))
    pairs = _attack_list(attacks)
    if device is None:
        device = model_device(model)
    codes = []
    with evaluating(model):
        for x, y in batches(data):
            x, y = x.to(device), y.to(device)
            _check_inputs(x, y)
            with torch.no_grad():
                correct = model(x).argmax(1) == y
            code = torch.where(correct, ROBUST, MISCLASSIFIED)
            for i, (name, attack) in enumerate(pairs):
                alive = (code == ROBUST).nonzero().squeeze(1)
                if alive.numel() == 0:
                    break
                x_alive = x[alive]
                x_adv = attack(model, x_alive, y[alive], eps)
                _check_adversarial(x_adv, x_alive, eps, norm, name)
                with torch.no_grad():
                    fooled = model(x_adv.to(device)).argmax(1) != y[alive]
                code[alive[fooled]] = i
            codes.append(code.cpu())
    if not codes or sum(len(c) for c in codes) == 0:
        raise ValueError("data holds no examples")
    broken_by = torch.cat(codes)
    n = len(broken_by)
    return RobustAccuracy(
        robust_accuracy=(broken_by == ROBUST).sum().item() / n,
        clean_accuracy=(broken_by != MISCLASSIFIED).sum().item() / n,
        broken_by=broken_by,
        attack_names=tuple(name for name, _ in pairs),
        counts={name: (broken_by == i).sum().item() for i, (name, _) in enumerate(pairs)},
    )
