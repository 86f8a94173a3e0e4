"""Shared fixtures. Tests run one-threaded on the CPU so results do not depend on the machine."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # no display in tests


@pytest.fixture(autouse=True)
def _deterministic_torch():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
