"""Where tensors live and how runs are made repeatable."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from course_lib import _checks


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

    Examples:
        >>> g = seed_everything(0)
        >>> torch.rand(1, generator=g).item() == torch.rand(1, generator=torch.Generator().manual_seed(0)).item()
        True
    """
    seed = _checks.integer(seed, "seed", ge=0, lt=2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` (default: the CPU), seeded with ``seed``.

    Passing one to an attack or a sampler makes that call repeatable on its own, whatever
    ran before it.

    Examples:
        >>> g = generator(0)
        >>> torch.rand(2, generator=g).tolist() == torch.rand(2, generator=generator(0)).tolist()
        True
    """
    seed = _checks.integer(seed, "seed", ge=0, lt=2**64)
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(seed)


def setup(seed: int = 0, device: str | torch.device | None = None, threads: int | None = 1) -> torch.device:
    """Every lecture's first code cell: seed everything, pick the device, fix the CPU threads.

    Args:
        seed: seeds Python, NumPy and PyTorch (:func:`seed_everything`).
        device: ``None`` (``$COURSE_DEVICE``, else CUDA, else MPS, else CPU) or a device name
            (:func:`get_device`).
        threads: CPU threads for PyTorch. Small models run as fast on one, are immune to a
            busy machine and give the same digits on every CPU; ``None`` keeps PyTorch's
            default (all cores).

    Returns:
        The ``torch.device`` to compute on.

    Examples:
        >>> device = setup(0, "cpu", threads=1)
        >>> device.type
        'cpu'
    """
    if threads is not None:
        threads = _checks.integer(threads, "threads", ge=1)
    if isinstance(device, torch.device):
        device = str(device)
    chosen = get_device(device)
    seed_everything(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    return chosen


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter; the CPU for a model without parameters.

    Examples:
        >>> model_device(torch.nn.Linear(2, 1))
        device(type='cpu')
    """
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
