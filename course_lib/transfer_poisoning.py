"""Poison Frogs' one-shot kill in transfer learning: a frozen extractor, a retrained linear head (lecture 10).

Shafahi et al.'s transfer-learning experiment: a network pretrained on other data is frozen, and
only its last (linear) layer is retrained on the victim's task. The attacker crafts poisons by
:func:`course_lib.feature_collision.feature_collision` against the frozen part, adds them *with their
correct label* (the base class) to the clean training set, and wins when the retrained head
classifies the target test image as the base class.

The course's version on digits (all offline):

* :func:`train_extractor`: ``course_lib.models.cnn`` trained for a few seconds on some digit classes
  of mnist5k (default 0 to 7); its convolutional trunk, up to and including ``Flatten`` (1568
  features for 28x28 images), frozen, is the extractor. (With the 100-unit layer above it as the
  extractor, one poison among 800 clean points killed 0 to 10% of the targets in our runs, against
  97 to 100% with the trunk: the one-shot kill wants features of high dimension, as InceptionV3's
  2048 were in the paper.)
* :func:`transfer_task`: the victim's task, other classes of the same data (default 8 against 9),
  relabelled 0, 1, ...
* :func:`fit_linear_head`: the head, multinomial logistic regression on the frozen features with a
  small L2 penalty, minimized by L-BFGS (the problem is strictly convex: a unique head, whatever
  the start).
* :func:`one_shot_kill`: the experiment over many targets: success rate, clean accuracy before and
  after, and how far the poisons moved from their bases.

Measured with the defaults (extractor on 0-7, 3 epochs; task 8 against 9; 50 targets, one poison
each; 300 steps of lr 0.01), one CPU thread: clean test accuracy 0.990 before and after; success
1.00 at beta = 0.01 and 0.1, 0.54 at 0.5 (0.96 with a 0.3 watermark), 0.16 at 1 (0.54 with three
poisons per target); 0 with no optimization (the base itself). Under a second per target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import _checks, models
from course_lib import train as training
from course_lib.data import DatasetSplits, load_dataset
from course_lib.feature_collision import feature_collision, feature_distance

__all__ = ["TransferResult", "fit_linear_head", "one_shot_kill", "train_extractor", "transfer_task"]


def _classes(classes: Sequence[int], name: str, num_classes: int) -> list[int]:
    try:
        out = [_checks.integer(c, name, ge=0, lt=num_classes) for c in classes]
    except TypeError:
        raise _checks.fail(name, f"a sequence of distinct classes in [0, {num_classes})", classes) from None
    if len(out) < 2 or len(set(out)) != len(out):
        raise _checks.fail(name, f"at least two distinct classes in [0, {num_classes})", classes)
    return out


def _subset(x: Tensor, y: Tensor, classes: list[int]) -> tuple[Tensor, Tensor]:
    keep = torch.isin(y, torch.tensor(classes, device=y.device))
    relabel = torch.full((int(y.max()) + 1,), -1, dtype=torch.int64, device=y.device)
    relabel[torch.tensor(classes, device=y.device)] = torch.arange(len(classes), device=y.device)
    return x[keep], relabel[y[keep]]


def train_extractor(data: DatasetSplits | None = None, classes: Sequence[int] = tuple(range(8)), *,
                    epochs: int = 3, batch_size: int = 64, lr: float = 1e-3, seed: int = 0) -> nn.Sequential:
    """A frozen feature extractor: the convolutional trunk of a CNN trained on ``classes``.

    Trains ``course_lib.models.cnn`` (Adam, cross-entropy; :func:`course_lib.train.train`) on the training
    images of ``classes`` (relabelled 0, 1, ...), then keeps its layers up to and including ``Flatten``.
    About 5 s on one CPU thread with the defaults (3 epochs over 3,200 digits).

    Args:
        data: default ``load_dataset("mnist5k")``.
        classes: the digit classes the extractor learns (the victim's task should use others).
        epochs, batch_size, lr: the training run; seed: seeds the initial weights and the batch order.

    Returns:
        ``nn.Sequential`` mapping images (N, C, H, W) to features (N, F), in eval mode, with
        ``requires_grad`` off on every parameter, on the CPU.
    """
    data = load_dataset("mnist5k") if data is None else data
    classes = _classes(classes, "classes", data.num_classes)
    epochs = _checks.integer(epochs, "epochs", ge=1)
    batch_size = _checks.integer(batch_size, "batch_size", ge=1)
    lr = _checks.number(lr, "lr", gt=0)
    x, y = _subset(*data.train.tensors, classes)
    gen = torch.Generator().manual_seed(_checks.integer(seed, "seed", ge=0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.cnn(data.input_shape, len(classes))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=gen)
    training.train(model, loader, epochs=epochs, lr=lr, progress=False)
    cut = next(i for i, layer in enumerate(model) if isinstance(layer, nn.Flatten)) + 1
    return model[:cut].eval().requires_grad_(False)


def transfer_task(data: DatasetSplits | None = None,
                  classes: Sequence[int] = (8, 9)) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The victim's task: the train and test images of ``classes``, relabelled 0, 1, ... in that order.

    Returns:
        ``(train_x, train_y, test_x, test_y)``; labels int64 in [0, len(classes)).

    Examples:
        >>> train_x, train_y, test_x, test_y = transfer_task()
        >>> tuple(train_x.shape), train_y.unique().tolist()
        ((800, 1, 28, 28), [0, 1])
    """
    data = load_dataset("mnist5k") if data is None else data
    classes = _classes(classes, "classes", data.num_classes)
    return (*_subset(*data.train.tensors, classes), *_subset(*data.test.tensors, classes))


def fit_linear_head(features: Tensor, labels: Tensor, num_classes: int, *, weight_decay: float = 1e-4,
                    max_iter: int = 200, init: nn.Linear | None = None) -> nn.Linear:
    """Multinomial logistic regression on frozen features: ``mean CE + (weight_decay / 2) ||W||^2`` by L-BFGS.

    Args:
        features: (N, F) float; labels: int64 (N,) in [0, num_classes).
        num_classes: K >= 2.
        weight_decay: the L2 weight on the weights (not the bias), >= 0; > 0 makes the minimizer unique.
        max_iter: L-BFGS iterations, >= 1.
        init: a head to start from (copied, not modified); default zeros.

    Returns:
        A new ``nn.Linear(F, K)`` on the features' device.
    """
    if not isinstance(features, Tensor) or features.ndim != 2 or not features.is_floating_point():
        raise ValueError(f"features must be a float tensor (N, F), got {getattr(features, 'shape', type(features))}")
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != features.shape[:1]:
        raise ValueError(f"labels must be int64 of shape ({features.shape[0]},), got "
                         f"{getattr(labels, 'dtype', type(labels))} {tuple(getattr(labels, 'shape', ()))}")
    num_classes = _checks.integer(num_classes, "num_classes", ge=2)
    weight_decay = _checks.number(weight_decay, "weight_decay", ge=0)
    max_iter = _checks.integer(max_iter, "max_iter", ge=1)
    if labels.numel() and not (labels.min() >= 0 and labels.max() < num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    head = nn.Linear(features.shape[1], num_classes).to(device=features.device, dtype=features.dtype)
    with torch.no_grad():
        if init is None:
            head.weight.zero_(), head.bias.zero_()
        else:
            head.load_state_dict(init.state_dict())
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)
    features = features.detach()

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(features), labels) + weight_decay / 2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return head.requires_grad_(False)


@dataclass(frozen=True)
class TransferResult:
    """What :func:`one_shot_kill` measured.

    Attributes:
        success_rate: fraction of the targets classified as the base class after retraining.
        successes: bool (T,), one per target.
        clean_accuracy: test accuracy of the head trained on the clean set alone.
        poisoned_accuracy: mean over targets of the retrained head's accuracy on the test set with
            that target left out (the collateral damage: Shafahi et al.'s poisons aim to cost none).
        target_indices: int64 (T,) into the test set; base_indices: int64 (T, P) into the test set.
        feature_distance: mean over poisons of ``||f(p) - f(t)||^2`` (before: of the bases, in
            ``base_feature_distance``).
        input_distance: mean over poisons of ``||p - b||_2`` (b the clean base, before watermarking).
        poisons: the poisons (T, P, C, H, W).
    """

    success_rate: float
    successes: Tensor
    clean_accuracy: float
    poisoned_accuracy: float
    target_indices: Tensor
    base_indices: Tensor
    feature_distance: float
    base_feature_distance: float
    input_distance: float
    poisons: Tensor


def _accuracy(head: nn.Linear, features: Tensor, labels: Tensor) -> float:
    return (head(features).argmax(1) == labels).double().mean().item()


def one_shot_kill(extractor: nn.Module, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *,
                  target_class: int = 1, base_class: int = 0, targets: int = 20, poisons: int = 1,
                  beta: float = 0.1, steps: int = 300, lr: float = 0.01, watermark: float = 0.0,
                  weight_decay: float = 1e-4, max_iter: int = 200, seed: int = 0) -> TransferResult:
    """The one-shot kill experiment over ``targets`` targets (Shafahi et al. 2018, transfer learning).

    1. Fit the clean head on ``f(train)`` (:func:`fit_linear_head`).
    2. Draw ``targets`` test images of ``target_class`` that the clean head classifies correctly, and
       for each, ``poisons`` distinct test images of ``base_class`` as bases (a seeded draw).
    3. Craft every poison with one batched :func:`course_lib.feature_collision.feature_collision`.
    4. For each target, refit the head on the clean set plus its poisons, labelled ``base_class``
       (started from the clean head; the penalty makes the minimizer unique), and record whether the
       target is now classified as ``base_class``.

    Args:
        extractor: the frozen feature extractor (N, C, H, W) -> (N, F).
        train, test: ``(x, y)`` pairs of images in [0, 1] and int64 labels (e.g. :func:`transfer_task`).
        target_class, base_class: distinct labels of the task.
        targets: number of targets T >= 1; poisons: poisons per target P >= 1.
        beta, steps, lr, watermark: the attack's, see :func:`course_lib.feature_collision.feature_collision`.
        weight_decay, max_iter: the head's, see :func:`fit_linear_head`.
        seed: seeds the draw of targets and bases.

    Returns:
        A :class:`TransferResult`.

    Raises:
        ValueError: for bad arguments, or fewer eligible targets or bases than asked for.
    """
    (train_x, train_y), (test_x, test_y) = train, test
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    target_class = _checks.integer(target_class, "target_class", ge=0, lt=num_classes)
    base_class = _checks.integer(base_class, "base_class", ge=0, lt=num_classes)
    if target_class == base_class:
        raise ValueError(f"target_class and base_class must differ, both are {target_class}")
    targets = _checks.integer(targets, "targets", ge=1)
    poisons = _checks.integer(poisons, "poisons", ge=1)
    gen = torch.Generator().manual_seed(_checks.integer(seed, "seed", ge=0))
    with torch.no_grad():
        f_train, f_test = extractor(train_x).flatten(1), extractor(test_x).flatten(1)
    clean = fit_linear_head(f_train, train_y, num_classes, weight_decay=weight_decay, max_iter=max_iter)
    with torch.no_grad():
        correct = clean(f_test).argmax(1) == test_y
    eligible = torch.nonzero((test_y == target_class) & correct).flatten().cpu()
    pool = torch.nonzero(test_y == base_class).flatten().cpu()
    if len(eligible) < targets or len(pool) < poisons:
        raise ValueError(f"asked for {targets} targets and {poisons} bases each; the test set has {len(eligible)} "
                         f"correctly classified images of class {target_class} and {len(pool)} of class {base_class}")
    chosen = eligible[torch.randperm(len(eligible), generator=gen)[:targets]]
    bases = torch.stack([pool[torch.randperm(len(pool), generator=gen)[:poisons]] for _ in range(targets)])
    target_x = test_x[chosen.to(test_x.device)].repeat_interleave(poisons, dim=0)
    base_x = test_x[bases.flatten().to(test_x.device)]
    poison = feature_collision(extractor, target_x, base_x, beta=beta, steps=steps, lr=lr, watermark=watermark)
    with torch.no_grad():
        f_poison = extractor(poison).flatten(1)
    poison_y = torch.full((poisons,), base_class, dtype=torch.int64, device=train_y.device)
    successes, accuracies = [], []
    for i, t in enumerate(chosen.tolist()):
        rows = slice(i * poisons, (i + 1) * poisons)
        head = fit_linear_head(torch.cat([f_train, f_poison[rows]]), torch.cat([train_y, poison_y]), num_classes,
                               weight_decay=weight_decay, max_iter=max_iter, init=clean)
        with torch.no_grad():
            successes.append(bool(head(f_test[t:t + 1]).argmax(1).item() == base_class))
            others = torch.arange(len(test_y), device=test_y.device) != t
            accuracies.append(_accuracy(head, f_test[others], test_y[others]))
    successes_t = torch.tensor(successes)
    with torch.no_grad():
        clean_accuracy = _accuracy(clean, f_test, test_y)
    return TransferResult(
        success_rate=successes_t.double().mean().item(), successes=successes_t, clean_accuracy=clean_accuracy,
        poisoned_accuracy=sum(accuracies) / len(accuracies), target_indices=chosen, base_indices=bases,
        feature_distance=feature_distance(extractor, poison, target_x).mean().item(),
        base_feature_distance=feature_distance(extractor, base_x, target_x).mean().item(),
        input_distance=(poison - base_x).flatten(1).norm(dim=1).mean().item(),
        poisons=poison.reshape(targets, poisons, *poison.shape[1:]))
