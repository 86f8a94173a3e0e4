"""Where tensors live and how runs are made repeatable."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def get_device(prefer: str | None = None) -> torch.device:
    """The device a lecture should compute on.

    Args:
        prefer: ``"cpu"``, ``"cuda"``, ``"mps"`` or ``None``. ``None`` reads the
            ``COURSE_DEVICE`` environment variable, else picks CUDA when available,
            then Apple's MPS, then the CPU.

    Returns:
        A ``torch.device``.

    Raises:
        ValueError: if ``prefer`` names a device that is not available here.
    """
    choice = prefer if prefer is not None else os.environ.get("COURSE_DEVICE") or None
    if choice is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except RuntimeError as err:
        raise ValueError(f"prefer must name a torch device such as 'cpu' or 'cuda', got {choice!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"prefer={choice!r} asks for CUDA, but torch.cuda.is_available() is False here")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"prefer={choice!r} asks for MPS, which is not available here")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's (CPU and CUDA) random generators.

    Args:
        seed: a non-negative integer below 2**32.

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed``, for code that prefers an
        explicit generator to the global one.

    Raises:
        ValueError: if ``seed`` is not an integer in [0, 2**32).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)
