"""Training and evaluation loops shared by every lecture.

``train`` minimizes the mean of a *batch loss* over a data loader. The batch loss
is where the lectures differ: standard training uses :func:`cross_entropy_loss`;
adversarial, noise-augmented and IBP training plug in their own objective with
the same signature ``batch_loss(model, x, y) -> (loss, logits)``.

Adversarial training (lecture 3) is a batch loss too: ``adversarial_loss(attack, eps)`` runs
any inner maximizer ``attack(model, x, y, eps) -> x_adv`` on the batch and returns the
cross-entropy at its output, which Danskin's theorem makes the right gradient for the min-max
objective; ``pgd_attack(steps)`` and ``fgsm_rs_attack()`` build the usual inner maximizers, and
``ramp_batches`` grows eps from 0 at the start of training::

    loss = adversarial_loss(pgd_attack(7), eps=0.3, ramp_batches=64)   # PGD-AT (Madry et al.)
    history = train(model, loader, epochs=20, batch_loss=loss)

History: ``train`` returns a dict of per-epoch lists, ready for ``plt.plot``:
``loss`` and ``accuracy`` (running averages over the epoch's training batches),
and ``val_loss``/``val_accuracy`` when a ``val_loader`` is given (model in eval mode).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from course_lib.attacks import EpsAttack, pgd
from course_lib.data import batches
from course_lib.device import model_device
from course_lib.models import evaluating

BatchLoss = Callable[[nn.Module, Tensor, Tensor], "tuple[Tensor, Tensor]"]
"""``batch_loss(model, x, y) -> (loss, logits)``: a scalar loss to minimize and the
(N, K) logits used to count correct predictions."""


def cross_entropy_loss(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Standard training: mean cross-entropy of the model's logits on clean inputs."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def _check_batch(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"a batch must be a pair of tensors (x, y), got {type(x).__name__}, {type(y).__name__}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels y must have shape ({x.shape[0]},) to match x {tuple(x.shape)}, got {tuple(y.shape)}")
    if y.dtype != torch.int64:
        raise ValueError(f"labels y must be int64 class indices, got dtype {y.dtype}")


def _forward(batch_loss: BatchLoss, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    try:
        return batch_loss(model, x, y)
    except RuntimeError as err:
        if any(word in str(err) for word in ("shape", "size", "dimension")):
            raise ValueError(f"the model cannot take a batch x of shape {tuple(x.shape)}: {err}") from err
        raise


def _run_epoch(model: nn.Module, loader: Iterable, batch_loss: BatchLoss, device: torch.device,
               optimizer: torch.optim.Optimizer | None, bar) -> tuple[float, float]:
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        _check_batch(x, y)
        x, y = x.to(device), y.to(device)
        with torch.set_grad_enabled(optimizer is not None):
            loss, logits = _forward(batch_loss, model, x, y)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        n = y.shape[0]
        total_loss += loss.item() * n
        correct += _count_correct(logits, y)
        seen += n
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
    if seen == 0:
        raise ValueError("the data loader yielded no examples (empty data)")
    return total_loss / seen, correct / seen


def _count_correct(logits: Tensor, y: Tensor) -> int:
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
                correct += _count_correct(model(x), y)
            seen += y.shape[0]
    if seen == 0:
        raise ValueError("data holds no examples")
    return correct / seen


def evaluate(model: nn.Module, loader: Iterable, *, batch_loss: BatchLoss = cross_entropy_loss,
             device: torch.device | str | None = None, progress: bool = False) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode, without gradients.

    Args:
        model: maps x (N, ...) to logits (N, K).
        loader: yields batches ``(x, y)``; y int64 (N,). A pair of tensors ``(x, y)`` is split
            into batches of 256.
        batch_loss: the objective; default clean cross-entropy. It runs under
            ``torch.no_grad()``: one that needs input gradients (an attack) enables
            them itself with ``torch.enable_grad()``.
        device: where to compute; default the model's device.
        progress: show a tqdm bar.

    Returns:
        ``{"loss": float, "accuracy": float in [0, 1]}``; the model's train/eval mode is restored.

    Raises:
        ValueError: if the loader is empty or a batch is malformed.
    """
    device = torch.device(device) if device is not None else model_device(model)
    loader = batches(loader)
    with evaluating(model):
        bar = tqdm(total=_len_or_none(loader), desc="evaluate", leave=False) if progress else None
        loss, acc = _run_epoch(model, loader, batch_loss, device, None, bar)
        if bar is not None:
            bar.close()
    return {"loss": loss, "accuracy": acc}


def _len_or_none(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def train(model: nn.Module, loader: Iterable, *, epochs: int = 1,
          optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
          batch_loss: BatchLoss = cross_entropy_loss, val_loader: Iterable | None = None,
          device: torch.device | str | None = None, progress: bool = True,
          desc: str = "train") -> dict[str, list[float]]:
    """Train ``model`` in place for ``epochs`` passes over ``loader``.

    Args:
        model: maps x (N, ...) to logits (N, K); moved to ``device`` if one is given.
        loader: yields training batches ``(x, y)``; y int64 (N,).
        epochs: number of passes, >= 1.
        optimizer: any ``torch.optim.Optimizer`` over the model's parameters (e.g.
            ``course_lib.optim.SGD``); default Adam with learning rate ``lr``.
        lr: learning rate of the default optimizer, > 0 (ignored when ``optimizer`` is given).
        batch_loss: the objective per batch, ``(model, x, y) -> (loss, logits)``.
        val_loader: optional held-out batches, evaluated after each epoch.
        device: where to train; default the model's current device.
        progress: show a tqdm progress bar (one bar for the whole run).
        desc: the progress bar's label.

    Returns:
        History: ``{"loss": [...], "accuracy": [...]}`` per epoch, plus ``val_loss`` and
        ``val_accuracy`` with a ``val_loader``. A diverging run records inf/nan losses.

    Raises:
        ValueError: for ``epochs < 1``, ``lr <= 0``, an empty loader or malformed batches.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if isinstance(loader, (tuple, list)) and len(loader) == 2 and all(isinstance(t, Tensor) for t in loader):
        raise ValueError("loader must yield shuffled training batches (x, y), not be one pair of tensors: use "
                         "data.loaders(batch_size) or DataLoader(TensorDataset(x, y), batch_size=..., shuffle=True)")
    if optimizer is None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a number > 0, got {lr!r}")
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if device is not None:
        model.to(device)
    device = model_device(model)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    if val_loader is not None:
        history.update(val_loss=[], val_accuracy=[])
    per_epoch = _len_or_none(loader)
    bar = tqdm(total=None if per_epoch is None else per_epoch * epochs, desc=desc,
               disable=not progress)
    model.train()
    try:
        for _ in range(epochs):
            loss, acc = _run_epoch(model, loader, batch_loss, device, optimizer, bar)
            history["loss"].append(loss)
            history["accuracy"].append(acc)
            if val_loader is not None:
                val = evaluate(model, val_loader, batch_loss=batch_loss, device=device)
                history["val_loss"].append(val["loss"])
                history["val_accuracy"].append(val["accuracy"])
                model.train()
    finally:
        bar.close()
    return history


# ---------------------------------------------------------------------------
# Adversarial training (lecture 3): min over the weights of the max over the eps-ball
# ---------------------------------------------------------------------------

class EpsRamp:
    """A radius that grows linearly from 0 over the first training batches (adversarial and IBP training).

    ``eps_t = eps * min(1, t / ramp_batches)`` at the t-th (0-based) training batch, so batch 0
    is clean and batches ``t >= ramp_batches`` use the full ``eps``. A batch counts as a training
    batch when gradients are enabled (``train``); under ``torch.no_grad()`` (``evaluate``, the
    validation pass of ``train``) the full ``eps`` is used and the counter does not move.

    Attributes:
        eps: the target radius, in input units.
        ramp_batches: length of the linear ramp, in training batches (0: no ramp).
        batches: training batches seen so far.
        eps_history: the eps used at each training batch so far (for plotting the ramp).
    """

    def __init__(self, eps: float, ramp_batches: int) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < float("inf"):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        if isinstance(ramp_batches, bool) or not isinstance(ramp_batches, int) or ramp_batches < 0:
            raise ValueError(f"ramp_batches must be an integer >= 0, got {ramp_batches!r}")
        self.eps = float(eps)
        self.ramp_batches = ramp_batches
        self.batches = 0
        self.eps_history: list[float] = []

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
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    ratio = 2.5 / steps if alpha_ratio is None else alpha_ratio
    if not ratio > 0:
        raise ValueError(f"alpha_ratio must be > 0, got {alpha_ratio!r}")

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
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < float("inf"):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.sigma = float(sigma)
        self.generator = generator

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
    """
    return GaussianNoiseLoss(sigma, generator=generator)


# ---------------------------------------------------------------------------
# IBP training (lecture 4): minimize an upper bound on the worst-case loss
# ---------------------------------------------------------------------------

class IBPLoss(EpsRamp):
    """The robust loss of IBP training (Gowal et al. 2018), with an epsilon ramp.

    ``loss = gamma * CE(y, model(x)) + (1 - gamma) * CE(y, z_worst)`` where ``z_worst`` are the
    worst-case logits of :func:`course_lib.ibp.worst_case_logits`: minus the IBP lower bounds
    on the margins ``z_y - z_j`` over the clipped eps-box (0 for the true class). Since the
    cross-entropy only grows when the true logit drops and the others rise, ``CE(y, z_worst)``
    upper-bounds the cross-entropy at every input of the box, so driving it down trains a
    network IBP can certify. ``gamma`` weighs the clean fit (Gowal et al.'s kappa, ending at 0.5).

    Epsilon ramp as in :class:`AdversarialLoss`: ``eps_t = eps * min(1, t / ramp_batches)`` at
    the t-th (0-based) training batch (gradients enabled); under ``torch.no_grad()`` (``evaluate``)
    the full ``eps`` is used and the counter does not move. Without a ramp IBP training at a large
    eps usually collapses: the bounds of a random network are huge.

    Attributes:
        eps, gamma, ramp_batches, fold_last: as given.
        batches: training batches seen so far.
        eps_history: the eps used at each training batch so far.
    """

    def __init__(self, eps: float, *, gamma: float = 0.5, ramp_batches: int = 0, fold_last: bool = True) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be a number in [0, 1], got {gamma!r}")
        super().__init__(eps, ramp_batches)
        self.gamma, self.fold_last = float(gamma), fold_last

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The robust loss of the batch.

        Args:
            model: an IBP-supported ``nn.Sequential`` mapping x (N, ...) to logits (N, K).
            x: inputs (N, ...) in [0, 1].
            y: int64 labels (N,).

        Returns:
            ``(loss, logits)``: the scalar robust loss and the clean (N, K) logits (accuracy is
            counted on clean inputs).
        """
        from course_lib.ibp import worst_case_logits  # here: train.py is imported by every lecture

        eps = self.current_eps()
        logits = model(x)
        worst = worst_case_logits(model, x, y, eps, fold_last=self.fold_last)
        loss = self.gamma * F.cross_entropy(logits, y) + (1 - self.gamma) * F.cross_entropy(worst, y)
        return loss, logits

    def __repr__(self) -> str:
        return (f"IBPLoss(eps={self.eps:g}, gamma={self.gamma:g}, ramp_batches={self.ramp_batches}, "
                f"fold_last={self.fold_last})")


def ibp_loss(eps: float, *, gamma: float = 0.5, ramp_batches: int = 0, fold_last: bool = True) -> IBPLoss:
    """The batch loss of IBP training: ``train(model, loader, batch_loss=ibp_loss(0.1, ramp_batches=200))``.

    Args:
        eps: target L-inf radius, >= 0, in input units.
        gamma: weight of the clean cross-entropy, in [0, 1]; ``1 - gamma`` weighs the worst case.
        ramp_batches: grow eps linearly from 0 over this many training batches (0: none).
        fold_last: fold the last Linear layer into the margins (tighter bounds).

    Returns:
        An :class:`IBPLoss`; it counts training batches, so use a fresh one per training run.

    Raises:
        ValueError: for eps < 0, gamma outside [0, 1], or ramp_batches not an integer >= 0.
    """
    return IBPLoss(eps, gamma=gamma, ramp_batches=ramp_batches, fold_last=fold_last)
