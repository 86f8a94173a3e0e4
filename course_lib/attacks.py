"""Adversarial examples: FGSM, PGD and APGD, accuracy under attack, the worst case over attacks (lectures 2, 3, 8).

An untargeted attack solves, approximately, ``max over ||delta|| <= eps of loss(model(x + delta), y)``
subject to ``x + delta`` in [0, 1]; a targeted one minimizes the loss toward target labels.

=========== =========== ===============================================================
math        code        meaning
=========== =========== ===============================================================
epsilon     ``eps``     radius of the threat model, in input units (0.3 = 30% of the range)
delta       ``delta``   perturbation, shape of x
alpha       ``alpha``   PGD step size, in input units
=========== =========== ===============================================================

Every attack takes a model mapping inputs (N, C, H, W) in [0, 1] to logits (N, K) and
returns adversarial inputs of x's shape, dtype and device, inside the eps-ball of the
chosen norm around x and inside [0, 1]. "Inside the ball" holds up to one rounding of x's dtype:
``x_adv = x + delta`` is rounded to x's dtype, so ``|x_adv - x|`` can exceed eps by a rounding
error of the pixel values, at most about ``2**-24`` (6e-8) in float32 for values in [0, 1]
(compare with a tolerance, such as ``eps + 1e-6``). The box [0, 1] holds exactly. The model's
train/eval mode is left as it is, no gradient is left on its parameters (gradients are taken
with ``torch.autograd.grad`` with respect to the input only), and x is never modified in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from course_lib import _checks
from course_lib.apgd import apgd
# the shared pieces live in attack_base (so that apgd need not import this module); _loss and
# _input_gradient stay reachable here as attacks._loss, attacks._input_gradient
from course_lib.attack_base import LOSSES, _check_inputs, _input_gradient, _loss, _per_example_norm, dlr_loss
from course_lib.evaluation import accuracy
from course_lib.robust_evaluation import MISCLASSIFIED, ROBUST, RobustAccuracy, robust_accuracy

__all__ = ["LOSSES", "MISCLASSIFIED", "NORMS", "ROBUST", "RobustAccuracy", "accuracy_under_attack", "apgd",
           "dlr_loss", "epsilon_sweep", "fgsm", "pgd", "project", "robust_accuracy"]

NORMS = ("linf", "l2")

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""``attack(model, x, y) -> x_adv``, e.g. ``functools.partial(pgd, eps=0.1, alpha=0.01, steps=20)``."""

EpsAttack = Callable[[nn.Module, Tensor, Tensor, float], Tensor]
"""``attack(model, x, y, eps) -> x_adv``, e.g. ``fgsm``; used by :func:`epsilon_sweep` and :func:`robust_accuracy`."""


def project(delta: Tensor, eps: float, norm: str = "linf") -> Tensor:
    """Euclidean projection of each perturbation onto the eps-ball of ``norm``.

    Args:
        delta: perturbations, shape (N, ...).
        eps: radius >= 0.
        norm: ``"linf"`` (coordinate-wise clipping to [-eps, eps]) or ``"l2"`` (rows with
            norm above eps are rescaled to norm eps; the others are unchanged).

    Returns:
        A new tensor of delta's shape.

    Examples:
        >>> project(torch.tensor([[0.5, -0.05]]), 0.1)
        tensor([[ 0.1000, -0.0500]])
        >>> project(torch.tensor([[3.0, 4.0]]), 1.0, "l2")
        tensor([[0.6000, 0.8000]])
    """
    eps = _checks.number(eps, "eps", ge=0)
    if _checks.choice(norm, "norm", NORMS) == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / _per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale


def _random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A perturbation drawn uniformly from the eps-ball of ``norm``, on x's device."""
    device = generator.device if generator is not None else x.device
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
        return ((2 * u - 1) * eps).to(x.device)
    # uniform in the L2 ball: a uniform direction, and a radius eps * U^(1/d)
    d = x[0].numel()
    direction = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    radius = torch.rand(x.shape[0], generator=generator, device=device, dtype=x.dtype).pow(1.0 / d) * eps
    direction = direction / _per_example_norm(direction).clamp_min(1e-12)
    return (direction * radius.view(-1, *([1] * (x.ndim - 1)))).to(x.device)


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, targeted: bool = False,
         loss: str = "ce") -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one signed-gradient step.

    The exact L-inf attack on a linear model: the loss sees x only through ``w^T x`` and
    the constraint acts per pixel, so moving every pixel by eps along the gradient's
    sign is optimal.

    Args:
        model: maps x (N, C, H, W) to logits (N, K).
        x: clean inputs, values in [0, 1].
        y: int64 labels (N,); the *target* labels if ``targeted``.
        eps: L-inf radius >= 0, in input units.
        targeted: descend the loss toward ``y`` instead of ascending it.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (``max_{j != y} z_j - z_y`` on the logits
            z, > 0 exactly when misclassified; its gradient does not vanish when the softmax
            saturates in float32, the cross-entropy's can), or ``"dlr"`` (:func:`dlr_loss`: the
            margin over the spread of the top three logits, K >= 3). K >= 2 classes for ``"margin"``.

    Returns:
        x_adv: shape, dtype and device of x; ``|x_adv - x| <= eps`` per pixel (up to rounding, see
        the module docstring), in [0, 1].

    Raises:
        ValueError: if eps < 0, x lies outside [0, 1], y is not int64 of shape (N,), loss is unknown,
            or loss is ``"dlr"`` with fewer than 3 classes.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 1, 2, 2), torch.randint(3, (5,))
        >>> x_adv = fgsm(model, x, y, eps=0.1)
        >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6), bool(x_adv.min() >= 0 and x_adv.max() <= 1)
        (True, True)
        >>> x_m = fgsm(model, x, y, eps=0.1, loss="margin")
        >>> bool((x_m - x).abs().max() <= 0.1 + 1e-6), bool(x_m.min() >= 0 and x_m.max() <= 1)
        (True, True)
    """
    eps = _checks.number(eps, "eps", ge=0)
    _check_inputs(x, y)
    targeted = _checks.flag(targeted, "targeted")
    loss = _checks.choice(loss, "loss", LOSSES)
    grad = _input_gradient(model, x, y, loss)
    step = -eps if targeted else eps  # a targeted attack descends the loss toward y
    return (x.detach() + step * grad.sign()).clamp_(0, 1)


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int, *,
        norm: str = "linf", random_start: bool = True, targeted: bool = False,
        generator: torch.Generator | None = None, loss: str = "ce") -> Tensor:
    """Projected gradient descent on the loss (Madry et al. 2018), L-inf or L2.

    Each step moves by ``alpha`` in the steepest ascent direction of the norm (the
    gradient's sign for L-inf, the per-example normalized gradient for L2), projects
    the perturbation onto the eps-ball, and clips the input to [0, 1].

    Args:
        model: maps x (N, C, H, W) to logits (N, K).
        x: clean inputs, values in [0, 1].
        y: int64 labels (N,); the target labels if ``targeted``.
        eps: radius of the ball >= 0, in input units.
        alpha: step size > 0, in input units (e.g. eps / 4 for 10 steps; 2.5 * eps / steps).
        steps: number of gradient steps >= 1.
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a point drawn uniformly in the ball (else from x).
        targeted: descend the loss toward ``y`` instead of ascending it.
        generator: seeds the random start (on the generator's device); default the global RNG.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (``max_{j != y} z_j - z_y`` on the logits z,
            Carlini and Wagner 2017; > 0 exactly when misclassified). Use ``"margin"`` for a
            confident model: once every logit margin ``z_y - z_j`` exceeds about 104, the
            float32 softmax is exactly one-hot, the cross-entropy's gradient is exactly 0 and the
            sign step has nothing to follow (from a margin of about 17, p_y rounds to 1 and only
            the tiny p_j are left to steer it). ``"dlr"``: :func:`dlr_loss`, the margin divided by
            the spread of the top three logits (invariant to scaling the logits; K >= 3). K >= 2.

    Returns:
        x_adv: shape, dtype and device of x; inside the eps-ball of ``norm`` around x (up to
        rounding, see the module docstring), in [0, 1].

    Raises:
        ValueError: for eps < 0, alpha <= 0, steps < 1, an unknown norm or loss, x outside [0, 1],
            labels that are not int64 of shape (N,), or loss ``"dlr"`` with fewer than 3 classes.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 1, 2, 2), torch.randint(3, (5,))
        >>> x_adv = pgd(model, x, y, eps=0.1, alpha=0.025, steps=10, generator=torch.Generator().manual_seed(0))
        >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
        True
        >>> x_l2 = pgd(model, x, y, eps=0.5, alpha=0.1, steps=10, norm="l2")
        >>> bool((x_l2 - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-6)
        True
        >>> x_m = pgd(model, x, y, eps=0.1, alpha=0.025, steps=10, loss="margin")
        >>> bool((x_m - x).abs().max() <= 0.1 + 1e-6), bool(x_m.min() >= 0 and x_m.max() <= 1)
        (True, True)
    """
    eps = _checks.number(eps, "eps", ge=0)
    alpha = _checks.number(alpha, "alpha", gt=0)
    steps = _checks.integer(steps, "steps", ge=1)
    norm = _checks.choice(norm, "norm", NORMS)
    random_start = _checks.flag(random_start, "random_start")
    targeted = _checks.flag(targeted, "targeted")
    generator = _checks.optional_generator(generator)
    loss = _checks.choice(loss, "loss", LOSSES)
    _check_inputs(x, y)
    x = x.detach()
    if random_start and eps > 0:
        # clipping to [0, 1] moves each pixel toward x, so the start stays in the ball
        x_adv = (x + _random_start(x, eps, norm, generator)).clamp_(0, 1)
    else:
        x_adv = x.clone()
    step = -alpha if targeted else alpha  # a targeted attack descends the loss toward y
    if norm == "linf":
        # the intersection of the L-inf ball and the box [0, 1] is itself a box, so
        # projecting onto both at once is one coordinate-wise clamp
        lo, hi = (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)
        for _ in range(steps):
            grad = _input_gradient(model, x_adv, y, loss)
            x_adv = x_adv.add_(grad.sign_(), alpha=step).clamp_(lo, hi)
        return x_adv
    for _ in range(steps):
        grad = _input_gradient(model, x_adv, y, loss)
        x_adv = x_adv.add_(grad / _per_example_norm(grad).clamp_min(1e-12), alpha=step)
        x_adv = (x + project(x_adv - x, eps, "l2")).clamp_(0, 1)  # clipping only shrinks |delta|
    return x_adv



def accuracy_under_attack(model: nn.Module, data, attack: Attack | None, *,
                          device: torch.device | str | None = None) -> float:
    """Fraction of examples the model classifies correctly after ``attack``.

    Args:
        model: maps x (N, C, H, W) to logits (N, K); evaluated in eval mode (its mode is
            restored afterwards).
        data: a DataLoader (or any iterable) of batches ``(x, y)``, or a pair of tensors ``(x, y)``.
        attack: ``attack(model, x, y) -> x_adv``; ``None`` gives the clean accuracy.
        device: where to compute; default the model's device.

    Returns:
        Accuracy in [0, 1].

    Raises:
        ValueError: if ``data`` holds no examples.

    Examples:
        >>> import functools
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(3, (8,))
        >>> clean = accuracy_under_attack(model, (x, y), None)
        >>> accuracy_under_attack(model, (x, y), functools.partial(fgsm, eps=0.5)) <= clean
        True
    """
    return accuracy(model, data, attack=attack, device=device)


def epsilon_sweep(model: nn.Module, data, attack: EpsAttack, eps_values: Sequence[float], *,
                  device: torch.device | str | None = None) -> list[float]:
    """Accuracy under ``attack`` at each radius, for accuracy-vs-eps curves.

    Args:
        model, data, device: as in :func:`accuracy_under_attack`.
        attack: ``attack(model, x, y, eps) -> x_adv``, e.g. :func:`fgsm`, or
            ``lambda m, x, y, eps: pgd(m, x, y, eps, alpha=eps / 4, steps=20)``.
        eps_values: radii >= 0; eps = 0 gives the clean accuracy (the attack is not called).

    Returns:
        One accuracy in [0, 1] per radius, in order.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(3, (8,))
        >>> curve = epsilon_sweep(model, (x, y), fgsm, [0.0, 0.1, 0.5])
        >>> len(curve), curve[0] == accuracy_under_attack(model, (x, y), None)
        (3, True)
    """
    accuracies = []
    for eps in eps_values:
        eps = _checks.number(eps, "eps", ge=0)
        run = None if eps == 0 else (lambda m, x, y, e=eps: attack(m, x, y, e))
        accuracies.append(accuracy_under_attack(model, data, run, device=device))
    return accuracies
