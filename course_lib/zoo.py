"""Trained models for lecture 3, with the exact recipes that produce them.

Adversarial training costs one forward and backward pass per attack step on every batch:
PGD-AT with 7 steps is 8 times standard training, too slow to run inside a lecture's 90 s
CPU budget. So the adversarially trained models of lecture 3 ship with the package
(``course_lib/weights/<name>.pt``, stored in half precision, about 330 kB each), and this
module holds the code that trains them: :data:`RECIPES` says what (data, model, seed, epochs,
attack, eps and its ramp), :func:`train_recipe` does it, and :func:`load` returns the shipped
model, retraining it when asked (``retrain=True``) or when its file is missing.

Every recipe: ``cl.models.cnn`` on ``mnist5k`` (4,000 training digits), Adam (lr 1e-3),
batch 128 (32 batches per epoch), seed 0, L-inf eps = 0.3; the adversarial ones ramp eps
linearly from 0 over the first 2 epochs (64 batches) and train for 20 epochs.

==================== ================================================ ======= ==========================
name                 inner maximizer (``attack(model, x, y, eps)``)    shipped natural / FGSM / PGD-40 (%)
==================== ================================================ ======= ==========================
``mnist5k_standard`` none (clean cross-entropy)                        no      96.2 / 1.4 / 0.0
``mnist5k_fgsm``     FGSM, ``attacks.fgsm``                            yes     91.3 / 76.6 / 1.1
``mnist5k_fgsm_rs``  FGSM from a random start, step 1.25 eps           yes     95.4 / 77.1 / 16.5
``mnist5k_pgd``      PGD, 7 steps of 2.5 eps / 7 from a random start   yes     95.7 / 76.3 / 69.4
==================== ================================================ ======= ==========================

(Accuracies on the 1,000 test digits, :data:`DOCUMENTED_ACCURACY`; the standard model's when
trained on one CPU thread.) Retraining takes about 10 s (standard), 30 s (each FGSM variant)
and 60 s (PGD) on one CPU thread of an idle machine, monitoring included;
``python -m course_lib.zoo --retrain`` redoes the shipped ones. The shipped file holds the weights, the recipe, the training history (per epoch: the training loss and accuracy on
the attacked batches, and the natural, FGSM and PGD-10 accuracy on a fixed 500-digit subset
of the test split, for plots only: no epoch is selected with it; the last epoch's model is
kept) and the model's accuracies on the whole test split, measured after rounding the weights
to half precision (:func:`robust_accuracies`: natural, FGSM, and PGD with 40 steps of
2.5 eps / 40 from a seeded random start).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from course_lib import _checks, attacks, models
from course_lib import train as training
from course_lib.data import DatasetSplits, load_dataset
from course_lib.device import model_device, seed_everything

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FORMAT = 1
METHODS = ("standard", "fgsm", "fgsm_rs", "pgd")

DOCUMENTED_ACCURACY = {
    "mnist5k_standard": {"natural": 0.962, "fgsm": 0.014, "pgd": 0.000},
    "mnist5k_fgsm": {"natural": 0.913, "fgsm": 0.766, "pgd": 0.011},
    "mnist5k_fgsm_rs": {"natural": 0.954, "fgsm": 0.771, "pgd": 0.165},
    "mnist5k_pgd": {"natural": 0.957, "fgsm": 0.763, "pgd": 0.694},
}
"""Test accuracies (:func:`robust_accuracies`, default attack) of the models as shipped (the
standard one as trained on one CPU thread); ``tests/test_zoo.py`` checks them."""
MONITOR_SIZE = 500

EVAL = {"pgd_steps": 40, "seed": 0}
"""How :func:`robust_accuracies` attacks: FGSM at eps, and PGD with ``pgd_steps`` steps of
``2.5 * eps / pgd_steps`` (the steps add up to 2.5 eps) from a random start drawn with
``torch.Generator().manual_seed(seed)``. Madry et al. 2018 evaluate MNIST with 40 steps of
0.01 at eps = 0.3; on the FGSM-RS model that attack is too weak (its accuracy under it is
more than twice that under 100 steps of 0.01), while 40 steps of 0.01875 come within two
points of 100 steps of 0.01 on every model of the zoo."""


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained model.

    Attributes:
        name: the model's name, also its file name.
        method: ``"standard"``, ``"fgsm"`` (FGSM-AT), ``"fgsm_rs"`` (FGSM-AT from a random
            start, step ``1.25 * eps``) or ``"pgd"`` (PGD-AT, ``pgd_steps`` steps of ``2.5 * eps / pgd_steps``).
        dataset: a ``course_lib.data`` name.
        model: a ``course_lib.models`` builder name (``"cnn"``, ``"mlp"``, ``"linear"``).
        eps: the L-inf training radius.
        epochs: passes over the training split.
        batch_size: examples per batch.
        lr: Adam's learning rate.
        ramp_epochs: eps grows linearly from 0 over this many epochs (0: none).
        pgd_steps: PGD steps for ``method="pgd"``.
        seed: seeds the initialization, the batch order and the attacks' random starts.
        shipped: whether the weights ship with the package.
    """

    name: str
    method: str
    dataset: str = "mnist5k"
    model: str = "cnn"
    eps: float = 0.3
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    ramp_epochs: int = 2
    pgd_steps: int = 7
    seed: int = 0
    shipped: bool = True

    def __post_init__(self) -> None:
        _checks.choice(self.method, "method", METHODS)
        _checks.choice(self.model, "model", ("cnn", "mlp", "linear"))
        checked = {field: _checks.integer(getattr(self, field), field, ge=1)
                   for field in ("epochs", "batch_size", "pgd_steps")}
        checked.update(ramp_epochs=_checks.integer(self.ramp_epochs, "ramp_epochs", ge=0),
                       seed=_checks.integer(self.seed, "seed", ge=0),
                       eps=_checks.number(self.eps, "eps", ge=0), lr=_checks.number(self.lr, "lr", gt=0),
                       shipped=_checks.flag(self.shipped, "shipped"))
        for field, value in checked.items():  # Python numbers, so that records compare equal
            object.__setattr__(self, field, value)

    def attack(self) -> attacks.EpsAttack | None:
        """The inner maximizer ``attack(model, x, y, eps)``, seeded; None for standard training."""
        gen = torch.Generator().manual_seed(self.seed)
        if self.method == "fgsm":
            return attacks.fgsm
        if self.method == "fgsm_rs":
            return training.fgsm_rs_attack(generator=gen)
        if self.method == "pgd":
            return training.pgd_attack(self.pgd_steps, generator=gen)
        return None

    def batch_loss(self, batches_per_epoch: int) -> training.BatchLoss:
        """A fresh batch loss for one training run (the eps ramp counts its batches)."""
        attack = self.attack()
        if attack is None:
            return training.cross_entropy_loss
        return training.adversarial_loss(attack, self.eps, ramp_batches=self.ramp_epochs * batches_per_epoch)

    def new_model(self, input_shape, num_classes: int) -> nn.Sequential:
        """The untrained model, initialized from ``seed``."""
        seed_everything(self.seed)
        return getattr(models, self.model)(input_shape, num_classes)


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("mnist5k_standard", "standard", ramp_epochs=0, shipped=False),
    Recipe("mnist5k_fgsm", "fgsm"),
    Recipe("mnist5k_fgsm_rs", "fgsm_rs"),
    Recipe("mnist5k_pgd", "pgd"),
]}


@functools.lru_cache(maxsize=2)
def _cached_dataset(name: str) -> DatasetSplits:
    return load_dataset(name)  # parsing mnist5k takes seconds; the splits are never modified here


def _dataset(recipe: Recipe, data: DatasetSplits | None) -> DatasetSplits:
    if data is None:
        return _cached_dataset(recipe.dataset)
    if data.name != recipe.dataset:
        raise ValueError(f"data must be the recipe's data set {recipe.dataset!r}, got {data.name!r}")
    return data


def _recipe(name_or_recipe: str | Recipe) -> Recipe:
    if isinstance(name_or_recipe, Recipe):
        return name_or_recipe
    if name_or_recipe not in RECIPES:
        raise ValueError(f"name must be one of {', '.join(map(repr, RECIPES))}; got {name_or_recipe!r}")
    return RECIPES[name_or_recipe]


def robust_accuracies(model: nn.Module, data, eps: float, *, pgd_steps: int = EVAL["pgd_steps"],
                      pgd_alpha: float | None = None, seed: int = EVAL["seed"]) -> dict[str, float]:
    """Accuracy on clean inputs, under FGSM and under PGD (L-inf, random start), at radius eps.

    Args:
        model: maps x (N, C, H, W) to logits (N, K).
        data: a pair of tensors ``(x, y)`` or an iterable of batches, x in [0, 1].
        eps: L-inf radius > 0.
        pgd_steps: PGD's number of steps.
        pgd_alpha: PGD's step size; default ``2.5 * eps / pgd_steps``.
        seed: seeds PGD's random start (a generator on the model's device).

    Returns:
        ``{"natural": ..., "fgsm": ..., "pgd": ...}``, accuracies in [0, 1].

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(3, (8,))
        >>> acc = robust_accuracies(model, (x, y), 0.1, pgd_steps=3)
        >>> sorted(acc), acc["pgd"] <= acc["natural"]
        (['fgsm', 'natural', 'pgd'], True)
    """
    eps = _checks.number(eps, "eps", gt=0)
    pgd_steps = _checks.integer(pgd_steps, "pgd_steps", ge=1)
    seed = _checks.integer(seed, "seed", ge=0)
    alpha = 2.5 * eps / pgd_steps if pgd_alpha is None else _checks.number(pgd_alpha, "pgd_alpha", gt=0)
    gen = torch.Generator(device=model_device(model)).manual_seed(seed)
    return {
        "natural": training.accuracy(model, data),
        "fgsm": training.accuracy(model, data, attack=lambda m, x, y: attacks.fgsm(m, x, y, eps)),
        "pgd": training.accuracy(
            model, data, attack=lambda m, x, y: attacks.pgd(m, x, y, eps, alpha, pgd_steps, generator=gen)),
    }


def monitor_subset(data_test, size: int = MONITOR_SIZE, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed random subset of a test split (all classes mixed), ``(x, y)``.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> x, y = monitor_subset(TensorDataset(torch.rand(20, 1, 2, 2), torch.arange(20)), size=5)
        >>> tuple(x.shape), len(y.unique())
        ((5, 1, 2, 2), 5)
    """
    size = _checks.integer(size, "size", ge=1)
    seed = _checks.integer(seed, "seed", ge=0)
    x, y = data_test.tensors
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size]
    return x[idx], y[idx]


def train_recipe(recipe: str | Recipe, *, epochs: int | None = None, monitor: bool = True,
                 device: torch.device | str | None = None, data: DatasetSplits | None = None,
                 progress: bool = False) -> tuple[nn.Sequential, dict[str, list[float]]]:
    """Train a model from scratch by its recipe.

    Args:
        recipe: a :class:`Recipe` or the name of one in :data:`RECIPES`.
        epochs: override the recipe's number of epochs (shortened runs in tests).
        monitor: after each epoch, measure natural, FGSM and PGD-10 accuracy on
            :func:`monitor_subset` of the test split (about 0.7 s per epoch for the CNN on a CPU).
        device: where to train; default CPU.
        data: the recipe's data set, if already loaded (else it is loaded, once per process).
        progress: a tqdm bar over the epochs.

    Returns:
        ``(model, history)``: the model after the last epoch, in eval mode, and per-epoch lists
        ``loss``, ``accuracy`` (on the training batches as attacked), ``eps`` (the radius at
        the epoch's last batch), with ``monitor`` also ``natural``, ``fgsm``, ``pgd``; plus
        ``eps_per_batch`` (the ramp, one value per training batch) and ``seconds``.
    """
    recipe = _recipe(recipe)
    epochs = recipe.epochs if epochs is None else _checks.integer(epochs, "epochs", ge=1)
    data = _dataset(recipe, data)
    loader, _ = data.loaders(recipe.batch_size, seed=recipe.seed)
    device = torch.device(device) if device is not None else torch.device("cpu")
    model = recipe.new_model(data.input_shape, data.num_classes).to(device)
    batch_loss = recipe.batch_loss(len(loader))
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    watch = monitor_subset(data.test)
    watch = (watch[0].to(device), watch[1].to(device))
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "eps": []}
    if monitor:
        history.update(natural=[], fgsm=[], pgd=[])
    start = time.perf_counter()
    for _ in tqdm(range(epochs), desc=recipe.name, disable=not progress):
        epoch = training.train(model, loader, epochs=1, optimizer=optimizer, batch_loss=batch_loss,
                               progress=False)
        history["loss"] += epoch["loss"]
        history["accuracy"] += epoch["accuracy"]
        ramp = getattr(batch_loss, "eps_history", None)
        history["eps"].append(ramp[-1] if ramp else 0.0)
        if monitor:
            acc = robust_accuracies(model, watch, recipe.eps, pgd_steps=10)
            for key, value in acc.items():
                history[key].append(value)
    history["seconds"] = [time.perf_counter() - start]
    history["eps_per_batch"] = list(getattr(batch_loss, "eps_history", [0.0] * (epochs * len(loader))))
    return model.eval(), history


def weights_path(name: str | Recipe) -> Path:
    """Where the shipped weights of ``name`` (a recipe or its name) live: ``course_lib/weights/<name>.pt``."""
    return WEIGHTS_DIR / f"{_recipe(name).name}.pt"


def _to_half(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}


@contextlib.contextmanager
def _callers_random_state() -> Iterator[None]:
    """Leave Python's, NumPy's and PyTorch's random generators as the caller set them."""
    python, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy_state)


def _from_half(recipe: Recipe, record: dict, device: torch.device | str | None) -> nn.Sequential:
    # new_model seeds the generators (for training); the weights are overwritten here, and a
    # lecture's own seed must survive loading a model
    with _callers_random_state():
        model = recipe.new_model(tuple(record["input_shape"]), record["num_classes"])
    model.load_state_dict({k: v.float() for k, v in record["state_dict"].items()})
    return model.to(device if device is not None else "cpu").eval()


def make_weights(name: str | Recipe, *, path: Path | None = None, device: torch.device | str | None = None,
                 progress: bool = False) -> Path:
    """Train ``name`` by its recipe and write its weights file.

    The file holds the weights in half precision, the recipe, the training history, and the
    test accuracies (:func:`robust_accuracies` on the whole test split) of the model that
    :func:`load` returns, i.e. after rounding to half precision.

    Returns:
        The path written (default :func:`weights_path`).
    """
    recipe = _recipe(name)
    data = _dataset(recipe, None)
    model, history = train_recipe(recipe, device=device, data=data, progress=progress)
    history = {k: v for k, v in history.items() if k != "eps_per_batch"}  # eps_at() recomputes it
    record = {"format": FORMAT, "recipe": asdict(recipe), "state_dict": _to_half(model),
              "input_shape": list(data.input_shape), "num_classes": data.num_classes,
              "history": history, "eval": dict(EVAL), "torch": str(torch.__version__)}
    rounded = _from_half(recipe, record, device)  # what load() returns: measure that one
    record["test_accuracy"] = robust_accuracies(rounded, data.test.tensors, recipe.eps)
    path = Path(path) if path is not None else weights_path(recipe.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(record, path)
    return path


def load_record(name: str | Recipe, *, path: Path | None = None) -> dict:
    """The stored record of ``name``: ``recipe``, ``state_dict``, ``input_shape``, ``num_classes``,
    ``history``, ``test_accuracy``, ``eval``.

    Raises:
        FileNotFoundError: if the weights file is missing (``load`` retrains instead).
        ValueError: if the file was made by another recipe than the current one.
    """
    recipe = _recipe(name)
    path = Path(path) if path is not None else weights_path(recipe.name)
    record = torch.load(path, map_location="cpu", weights_only=True)
    if record.get("format") != FORMAT or record.get("recipe") != asdict(recipe):
        raise ValueError(f"{path} was made by another recipe ({record.get('recipe')}) than "
                         f"{recipe}: retrain it with course_lib.zoo.load({recipe.name!r}, retrain=True)")
    return record


def load(name: str | Recipe, *, retrain: bool = False, device: torch.device | str | None = None,
         path: Path | None = None, progress: bool = False) -> nn.Sequential:
    """A trained model of the zoo, in eval mode.

    Args:
        name: a key of :data:`RECIPES`, or a :class:`Recipe` (with ``path``, for recipes of your own).
        retrain: train it again by its recipe and overwrite the weights file.
        device: where to put the model; default CPU.
        path: the weights file; default :func:`weights_path`.
        progress: a tqdm bar while (re)training.

    Returns:
        The model, float32, with the stored (half-precision) weights. When the file is missing
        (or stale: made by another recipe) it is trained first, which takes a minute or two on a CPU.

    Raises:
        ValueError: for an unknown name.
    """
    recipe = _recipe(name)
    path = Path(path) if path is not None else weights_path(recipe.name)
    if not retrain and path.exists():
        try:
            return _from_half(recipe, load_record(recipe, path=path), device)
        except ValueError as err:
            warnings.warn(f"{err}; retraining", stacklevel=2)
    make_weights(recipe, path=path, device=device, progress=progress)
    return _from_half(recipe, load_record(recipe, path=path), device)


def main(argv: list[str] | None = None) -> None:
    """``python -m course_lib.zoo [--retrain] [NAME ...]``: show (or retrain) the shipped models."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=[n for n, r in RECIPES.items() if r.shipped])
    parser.add_argument("--retrain", action="store_true", help="train again and overwrite the weights files")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the shipped weights were made one-threaded on a CPU
    for name in args.names:
        if args.retrain:
            make_weights(name, progress=True)
        record = load_record(name)
        acc = record["test_accuracy"]
        size = weights_path(name).stat().st_size
        print(f"{name:18s} natural {acc['natural']:.3f}  FGSM {acc['fgsm']:.3f}  PGD-{EVAL['pgd_steps']} "
              f"{acc['pgd']:.3f}  trained in {record['history']['seconds'][0]:.0f} s  ({size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
