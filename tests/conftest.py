"""Shared fixtures. Tests run one-threaded on the CPU so results do not depend on the machine."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")  # no display in tests


@pytest.fixture(autouse=True)
def _deterministic_torch():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_7_1():
    """scikit-learn's 8x8 digits 7 (+1) and 1 (-1) of the training split: X float64 (n, 64), y (n,)."""
    from course_lib.data import load_dataset

    X, Y = load_dataset("digits").train.tensors
    X, Y = X.flatten(1).double().numpy(), Y.numpy()
    keep = (Y == 7) | (Y == 1)
    return X[keep], np.where(Y[keep] == 7, 1.0, -1.0)
