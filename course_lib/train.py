"""Training and evaluation loops shared by every lecture.

``train`` minimizes the mean of a *batch loss* over a data loader. The batch loss
is where the lectures differ: standard training uses :func:`cross_entropy_loss`;
adversarial, noise-augmented, IBP and CROWN-IBP training plug in their own objective with
the same signature ``batch_loss(model, x, y) -> (loss, logits)``.

Adversarial training (lecture 3) is a batch loss too: ``adversarial_loss(attack, eps)`` runs
any inner maximizer ``attack(model, x, y, eps) -> x_adv`` on the batch and returns the
cross-entropy at its output, which Danskin's theorem makes the right gradient for the min-max
objective; ``pgd_attack(steps)`` and ``fgsm_rs_attack()`` build the usual inner maximizers, and
``ramp_batches`` grows eps from 0 at the start of training::

    loss = adversarial_loss(pgd_attack(7), eps=0.3, ramp_batches=64)   # PGD-AT (Madry et al.)
    history = train(model, loader, epochs=20, batch_loss=loss)

The batch losses live in :mod:`course_lib.losses`, those of certified training (IBP and CROWN-IBP,
``ibp_loss``, ``crown_ibp_loss``) in :mod:`course_lib.certified_losses`; all are re-exported here
(``cl.train.adversarial_loss`` is ``cl.losses.adversarial_loss``). :func:`accuracy` is the one
accuracy loop of the library (clean, or under an attack); it lives in :mod:`course_lib.evaluation`,
below the attacks, so that :mod:`course_lib.attacks` can use it too.

History: ``train`` returns a dict of per-epoch lists, ready for ``plt.plot``:
``loss`` and ``accuracy`` (running averages over the epoch's training batches),
and ``val_loss``/``val_accuracy`` when a ``val_loader`` is given (model in eval mode).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from course_lib import _checks
from course_lib.data import batches
from course_lib.device import model_device
from course_lib.evaluation import accuracy, count_correct  # noqa: F401  (cl.train.accuracy)
# the certified-training losses live in course_lib.certified_losses, re-exported here
from course_lib.certified_losses import CROWNIBPLoss, IBPLoss, crown_ibp_loss, ibp_loss  # noqa: F401
# the batch losses live in course_lib.losses; their old home re-exports them
from course_lib.losses import (AdversarialLoss, BatchLoss, EpsRamp, GaussianNoiseLoss,  # noqa: F401
                               adversarial_loss, cross_entropy_loss, fgsm_rs_attack, gaussian_noise_loss,
                               pgd_attack)
from course_lib.models import evaluating

__all__ = ["AdversarialLoss", "BatchLoss", "CROWNIBPLoss", "EpsRamp", "GaussianNoiseLoss", "IBPLoss", "accuracy",
           "adversarial_loss", "cross_entropy_loss", "crown_ibp_loss", "cyclic_lr", "evaluate", "fgsm_rs_attack",
           "gaussian_noise_loss", "ibp_loss", "pgd_attack", "train"]


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
               optimizer: torch.optim.Optimizer | None, bar,
               set_lr: Callable[[int], None] | None = None) -> tuple[float, float]:
    total_loss, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(loader):
        _check_batch(x, y)
        x, y = x.to(device), y.to(device)
        if set_lr is not None:
            set_lr(i)
        with torch.set_grad_enabled(optimizer is not None):
            loss, logits = _forward(batch_loss, model, x, y)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        n = y.shape[0]
        total_loss += loss.item() * n
        correct += count_correct(logits, y)
        seen += n
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
    if seen == 0:
        raise ValueError("the data loader yielded no examples (empty data)")
    return total_loss / seen, correct / seen


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

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, y = torch.rand(6, 1, 2, 2), torch.zeros(6, dtype=torch.int64)
        >>> sorted(evaluate(net, (x, y)))
        ['accuracy', 'loss']
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
          desc: str = "train", lr_schedule: Callable[[float], float] | None = None) -> dict[str, list[float]]:
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
        lr_schedule: the learning rate as a function of progress in epochs, set on every
            parameter group before each batch: batch i of epoch e (from 0) of a loader of n
            batches uses ``lr_schedule(e + (i + 1) / n)``; e.g. :func:`cyclic_lr`. Needs a loader
            with a length.

    Returns:
        History: ``{"loss": [...], "accuracy": [...]}`` per epoch, plus ``val_loss`` and
        ``val_accuracy`` with a ``val_loader``. A diverging run records inf/nan losses.

    Raises:
        ValueError: for ``epochs < 1``, ``lr <= 0``, an empty loader or malformed batches.

    Examples:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.rand(32, 1, 2, 2)
        >>> loader = DataLoader(TensorDataset(x, (x.mean((1, 2, 3)) > 0.5).long()), batch_size=8, shuffle=True)
        >>> history = train(net, loader, epochs=3, lr=0.1, progress=False)
        >>> len(history["loss"]), sorted(history)
        (3, ['accuracy', 'loss'])
    """
    epochs = _checks.integer(epochs, "epochs", ge=1)
    if isinstance(loader, (tuple, list)) and len(loader) == 2 and all(isinstance(t, Tensor) for t in loader):
        raise ValueError("loader must yield shuffled training batches (x, y), not be one pair of tensors: use "
                         "data.loaders(batch_size) or DataLoader(TensorDataset(x, y), batch_size=..., shuffle=True)")
    if optimizer is None:
        lr = _checks.number(lr, "lr", gt=0)
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
    if lr_schedule is not None and not callable(lr_schedule):
        raise TypeError(f"lr_schedule must be a function of the epoch (a float), got {type(lr_schedule).__name__}")
    if lr_schedule is not None and not per_epoch:
        raise ValueError("lr_schedule needs a loader with a length (its number of batches per epoch)")
    bar = tqdm(total=None if per_epoch is None else per_epoch * epochs, desc=desc,
               disable=not progress)
    model.train()
    try:
        for epoch in range(epochs):
            set_lr = None if lr_schedule is None else _lr_setter(optimizer, lr_schedule, epoch, per_epoch)
            loss, acc = _run_epoch(model, loader, batch_loss, device, optimizer, bar, set_lr)
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


def _lr_setter(optimizer: torch.optim.Optimizer, lr_schedule: Callable[[float], float], epoch: int,
               per_epoch: int) -> Callable[[int], None]:
    def set_lr(i: int) -> None:
        lr = _checks.number(lr_schedule(epoch + (i + 1) / per_epoch), "lr_schedule(t)", ge=0)
        for group in optimizer.param_groups:
            group["lr"] = lr
    return set_lr


def cyclic_lr(peak: float, epochs: int, *, peak_at: float = 0.4) -> Callable[[float], float]:
    """The "cyclic" (one-cycle, triangular) learning rate of Wong, Rice and Kolter 2020, for ``train``.

    Linear from 0 at the start to ``peak`` at ``peak_at * epochs``, then linear back to 0 at
    ``epochs`` (as in their MNIST script, ``train_mnist.py`` of locuslab/fast_adversarial, with
    ``peak_at = 2 / 5``); 0 after the end.

    Args:
        peak: the largest learning rate, > 0.
        epochs: the length of the run, an integer >= 1.
        peak_at: where the peak sits, as a fraction of the run, in (0, 1).

    Returns:
        ``schedule(t) -> lr`` for a progress ``t`` >= 0 in epochs.

    Examples:
        >>> schedule = cyclic_lr(5e-3, 10)
        >>> [round(schedule(t), 5) for t in (0, 2, 4, 7, 10)]
        [0.0, 0.0025, 0.005, 0.0025, 0.0]
    """
    peak = _checks.number(peak, "peak", gt=0)
    epochs = _checks.integer(epochs, "epochs", ge=1)
    peak_at = _checks.number(peak_at, "peak_at", gt=0, lt=1)
    top = peak_at * epochs

    def schedule(t: float) -> float:
        if t <= top:
            return peak * max(t, 0.0) / top
        return peak * max(epochs - t, 0.0) / (epochs - top)
    return schedule
