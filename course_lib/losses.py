"""Batch losses: what ``train`` minimizes, one per kind of training.

A batch loss has the signature ``batch_loss(model, x, y) -> (loss, logits)``: a scalar loss
to minimize and the (N, K) logits used to count correct predictions. Standard training uses
:func:`cross_entropy_loss`; adversarial training (lecture 3) :func:`adversarial_loss`,
noise-augmented training for randomized smoothing (lecture 5) :func:`gaussian_noise_loss`.
The certified-training losses (IBP and CROWN-IBP training, lecture 4) build on :class:`EpsRamp`
and live in :mod:`course_lib.certified_losses`. Every name here and there is also reachable from
:mod:`course_lib.train` (``cl.train.adversarial_loss``, ``cl.train.ibp_loss``, ...).

Examples:
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
    >>> loss, logits = cross_entropy_loss(net, x, y)
    >>> loss.shape, logits.shape
    (torch.Size([]), torch.Size([2, 3]))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import _checks
from course_lib.attacks import EpsAttack, pgd

__all__ = ["AdversarialLoss", "BatchLoss", "EpsRamp", "GaussianNoiseLoss", "adversarial_loss",
           "cross_entropy_loss", "fgsm_rs_attack", "gaussian_noise_loss", "pgd_attack"]

BatchLoss = Callable[[nn.Module, Tensor, Tensor], "tuple[Tensor, Tensor]"]
"""``batch_loss(model, x, y) -> (loss, logits)``: a scalar loss to minimize and the
(N, K) logits used to count correct predictions."""


def cross_entropy_loss(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Standard training: mean cross-entropy of the model's logits on clean inputs."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


# ---------------------------------------------------------------------------
# Adversarial training (lecture 3): min over the weights of the max over the eps-ball
# ---------------------------------------------------------------------------

class EpsRamp:
    """A radius that grows linearly from 0 over the first training batches (adversarial and certified training).

    ``eps_t = eps * min(1, t / ramp_batches)`` at the t-th (0-based) training batch, so batch 0
    is clean and batches ``t >= ramp_batches`` use the full ``eps``. A batch counts as a training
    batch when gradients are enabled (``train``); under ``torch.no_grad()`` (``evaluate``, the
    validation pass of ``train``) the full ``eps`` is used and the counter does not move.

    Attributes:
        eps: the target radius, in input units.
        ramp_batches: length of the linear ramp, in training batches (0: no ramp).
        batches: training batches seen so far.
        eps_history: the eps used at each training batch so far (for plotting the ramp).

    Examples:
        >>> ramp = EpsRamp(0.3, ramp_batches=3)
        >>> [round(ramp.eps_at(t), 2) for t in range(5)]
        [0.0, 0.1, 0.2, 0.3, 0.3]
    """

    def __init__(self, eps: float, ramp_batches: int) -> None:
        self.eps = _checks.number(eps, "eps", ge=0)
        self.ramp_batches = _checks.integer(ramp_batches, "ramp_batches", ge=0)
        self.batches = 0
        self.eps_history: list[float] = []

    def progress(self, batch: int) -> float:
        """How far the ramp is at training batch ``batch`` (0-based): ``min(1, batch / ramp_batches)``, 1 without one."""
        if self.ramp_batches == 0 or batch >= self.ramp_batches:
            return 1.0
        return max(batch, 0) / self.ramp_batches

    def eps_at(self, batch: int) -> float:
        """The radius used at training batch ``batch`` (0-based): ``eps * min(1, batch / ramp_batches)``."""
        if self.ramp_batches == 0 or batch >= self.ramp_batches:
            return self.eps
        return self.eps * max(batch, 0) / self.ramp_batches

    def current_eps(self) -> float:
        """The radius for the batch being computed; counts it when it is a training batch."""
        if not torch.is_grad_enabled():
            return self.eps
        eps = self.eps_at(self.batches)
        self.batches += 1
        self.eps_history.append(eps)
        return eps


class AdversarialLoss(EpsRamp):
    """Danskin's batch loss: cross-entropy at the attack's output, the attack held fixed.

    Adversarial training minimizes ``rho(theta) = mean_i max_{delta in B(eps)} L(theta, x_i + delta, y_i)``.
    Danskin's theorem: where the inner maximizer ``delta*`` is unique, the gradient of the max
    is the gradient of the loss *at the maximizer*, ``grad rho(theta) = grad_theta L(theta, x + delta*, y)``,
    with ``delta*`` treated as a constant. So each batch runs the attack (the inner max), detaches
    its output, and returns the plain cross-entropy there; ``train`` takes the outer step.

    Epsilon ramp: ``eps`` grows linearly from 0 over the first ``ramp_batches`` *training*
    batches, ``eps_t = eps * min(1, t / ramp_batches)`` at the t-th (0-based) training batch,
    so batch 0 is clean and batches ``t >= ramp_batches`` use the full ``eps``. (Certified
    training ramps eps, Wong and Kolter 2018, Gowal et al. 2018; PGD training from scratch at
    MNIST's eps = 0.3 stays at chance without it, lecture 3.) A batch counts as a training batch when gradients are enabled (``train``);
    under ``torch.no_grad()`` (``evaluate``, the validation pass of ``train``) the full ``eps``
    is used and the counter does not move.

    Attributes:
        attack: the inner maximizer, ``attack(model, x, y, eps) -> x_adv``.
        eps: the target radius, in input units.
        ramp_batches: length of the linear ramp, in training batches (0: no ramp).
        batches: training batches seen so far.
        eps_history: the eps used at each training batch so far (for plotting the ramp).
    """

    def __init__(self, attack: EpsAttack, eps: float, *, ramp_batches: int = 0) -> None:
        if not callable(attack):
            raise TypeError(f"attack must be callable as attack(model, x, y, eps), got {type(attack).__name__}")
        super().__init__(eps, ramp_batches)
        self.attack = attack

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Attack the batch, then the cross-entropy at the attack's output.

        Args:
            model: maps x (N, ...) to logits (N, K).
            x: clean inputs (N, ...) in [0, 1].
            y: int64 labels (N,).

        Returns:
            ``(loss, logits)``: the mean cross-entropy at ``x_adv`` (a scalar that carries
            gradients to the model's parameters only) and the (N, K) logits at ``x_adv``.

        Raises:
            ValueError: if the attack returns a tensor of another shape than x.
        """
        eps = self.current_eps()
        if eps > 0:
            x_adv = self.attack(model, x, y, eps)
            if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape:
                got = tuple(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__
                raise ValueError(f"attack must return x_adv of x's shape {tuple(x.shape)}, got {got}")
            # Danskin: the maximizer is a constant of the outer problem; no gradient through the attack
            x = x_adv.detach()
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    def __repr__(self) -> str:
        name = getattr(self.attack, "__name__", type(self.attack).__name__)
        return f"AdversarialLoss(attack={name}, eps={self.eps:g}, ramp_batches={self.ramp_batches})"


def adversarial_loss(attack: EpsAttack, eps: float, *, ramp_batches: int = 0) -> AdversarialLoss:
    """The batch loss of adversarial training with ``attack`` as the inner maximizer.

    ``train(model, loader, batch_loss=adversarial_loss(attack, eps))`` is FGSM-AT with
    ``attack = course_lib.attacks.fgsm``, FGSM-AT with random start with
    ``fgsm_rs_attack()``, and PGD-AT with ``pgd_attack(steps)``.

    Args:
        attack: ``attack(model, x, y, eps) -> x_adv``, x (N, ...) in [0, 1].
        eps: target radius, >= 0, in input units (0.3 = 30% of the pixel range).
        ramp_batches: grow eps linearly from 0 over this many training batches (0: none).

    Returns:
        An :class:`AdversarialLoss`, a ``BatchLoss`` ``(model, x, y) -> (loss, logits)``.
        It counts training batches: use a fresh one for each training run.

    Raises:
        TypeError: if ``attack`` is not callable.
        ValueError: if ``eps < 0`` or ``ramp_batches`` is not an integer >= 0.

    Examples:
        >>> from course_lib.attacks import fgsm
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> loss_fn = adversarial_loss(fgsm, eps=0.1, ramp_batches=10)
        >>> loss, logits = loss_fn(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 2]))
        >>> loss_fn.eps_history  # the first training batch is clean
        [0.0]
    """
    return AdversarialLoss(attack, eps, ramp_batches=ramp_batches)


def pgd_attack(steps: int, *, alpha_ratio: float | None = None, norm: str = "linf",
               random_start: bool = True, generator: torch.Generator | None = None) -> EpsAttack:
    """PGD as an inner maximizer ``attack(model, x, y, eps)``, its step size proportional to eps.

    Args:
        steps: PGD iterations, >= 1.
        alpha_ratio: step size over radius, ``alpha = alpha_ratio * eps``; default
            ``2.5 / steps``, the rule of thumb of MadryLab's ``robustness`` library: the steps
            add up to 2.5 eps, room to cross the ball from a random start and to move along its boundary.
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform point of the ball.
        generator: seeds the random start.

    Returns:
        ``attack(model, x, y, eps) -> course_lib.attacks.pgd(model, x, y, eps, alpha_ratio * eps, steps, ...)``.

    Raises:
        ValueError: if ``steps < 1`` or ``alpha_ratio <= 0``.

    Examples:
        >>> attack = pgd_attack(7)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> x_adv = attack(net, x, torch.tensor([0, 2]), 0.1)
        >>> attack.__name__, bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
        ('pgd7', True)
    """
    steps = _checks.integer(steps, "steps", ge=1)
    ratio = 2.5 / steps if alpha_ratio is None else _checks.number(alpha_ratio, "alpha_ratio", gt=0)
    norm = _checks.choice(norm, "norm", ("linf", "l2"))
    random_start = _checks.flag(random_start, "random_start")
    generator = _checks.optional_generator(generator)

    def attack(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        return pgd(model, x, y, eps, ratio * eps, steps, norm=norm, random_start=random_start,
                   generator=generator)

    attack.__name__ = f"pgd{steps}"
    return attack


def fgsm_rs_attack(*, alpha_ratio: float = 1.25, generator: torch.Generator | None = None) -> EpsAttack:
    """FGSM with a random start (Wong, Rice and Kolter 2020): one PGD step of ``alpha_ratio * eps``
    from a uniform point of the L-inf ball, projected back onto it.

    Args:
        alpha_ratio: step size over radius; Wong et al. use 1.25 and report catastrophic
            overfitting for much larger steps.
        generator: seeds the random start.

    Returns:
        ``attack(model, x, y, eps)``, i.e. ``pgd_attack(1, alpha_ratio=alpha_ratio)``.

    Examples:
        >>> fgsm_rs_attack(generator=torch.Generator().manual_seed(0)).__name__
        'fgsm_rs'
    """
    attack = pgd_attack(1, alpha_ratio=alpha_ratio, random_start=True, generator=generator)
    attack.__name__ = "fgsm_rs"
    return attack


# ---------------------------------------------------------------------------
# Gaussian noise-augmented training (lecture 5, randomized smoothing)
# ---------------------------------------------------------------------------

class GaussianNoiseLoss:
    """Cross-entropy of the model at ``x + noise``, ``noise ~ N(0, sigma^2 I)`` drawn afresh per batch.

    Randomized smoothing (``course_lib.smoothing``) certifies ``g(x) = argmax_c P(f(x + noise) = c)``;
    the certificate grows with the probability of the top class under noise, so the base
    classifier ``f`` is trained on the noise it will be queried with (Cohen et al. 2019).

    The noisy input is **not** clipped to [0, 1], as in Cohen et al.: ``Smooth`` queries f at
    unclipped ``x + noise`` (the theorem is about Gaussian noise, and clipping would change its
    distribution), so training sees the same distribution as certification.

    Evaluation uses noise too: under ``torch.no_grad()`` (``evaluate``, the validation pass of
    ``train``) the loss and logits are at noisy inputs, so the reported accuracy is f's accuracy
    under noise, the average over examples of ``P(f(x + noise) = y)``, an estimate of how often the
    smoothed classifier's votes go to the right class, not its clean accuracy. Pass
    ``cross_entropy_loss`` to ``evaluate`` for the clean accuracy.

    Attributes:
        sigma: the noise standard deviation, in input units.
        generator: seeds the noise (on the inputs' device); None: PyTorch's global generator.
    """

    def __init__(self, sigma: float, *, generator: torch.Generator | None = None) -> None:
        self.sigma = _checks.number(sigma, "sigma", ge=0)
        self.generator = _checks.optional_generator(generator)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The batch loss at ``x + noise``.

        Args:
            model: maps x (N, ...) to logits (N, K).
            x: inputs (N, ...), floating point; noise of x's shape, dtype and device is added.
            y: int64 labels (N,).

        Returns:
            ``(loss, logits)``: mean cross-entropy and (N, K) logits at the noisy inputs.
        """
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
        logits = model(x + self.sigma * noise)
        return F.cross_entropy(logits, y), logits

    def __repr__(self) -> str:
        return f"GaussianNoiseLoss(sigma={self.sigma:g})"


def gaussian_noise_loss(sigma: float, *, generator: torch.Generator | None = None) -> GaussianNoiseLoss:
    """The batch loss of Gaussian noise-augmented training, for randomized smoothing.

    ``train(model, loader, batch_loss=gaussian_noise_loss(0.25))`` trains a base classifier for
    ``course_lib.smoothing.Smooth(model, num_classes, sigma=0.25)``.

    Args:
        sigma: noise standard deviation, >= 0, in input units (0 is standard training).
        generator: seeds the noise; a ``torch.Generator`` on the inputs' device.

    Returns:
        A :class:`GaussianNoiseLoss`, a ``BatchLoss`` ``(model, x, y) -> (loss, logits)``: the
        cross-entropy at ``x + N(0, sigma^2 I)``, not clipped to [0, 1]; noisy under ``evaluate`` too.

    Raises:
        ValueError: if sigma is not a finite number >= 0.
        TypeError: if generator is not a ``torch.Generator``.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> loss_fn = gaussian_noise_loss(0.25, generator=torch.Generator().manual_seed(0))
        >>> loss, logits = loss_fn(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 2]))
        >>> loss_fn, logits.shape
        (GaussianNoiseLoss(sigma=0.25), torch.Size([2, 3]))
    """
    return GaussianNoiseLoss(sigma, generator=generator)
