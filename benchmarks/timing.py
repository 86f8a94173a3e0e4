"""Wall-clock timing shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn()`` takes, the device's queued work finished before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_device(name: str | None) -> torch.device:
    """The device to time on (default ``course_lib.get_device()``), one thread on a CPU, seed 0.

    One thread: on a 2-core machine shared with other work, more threads time the neighbours.
    """
    import course_lib as cl

    device = cl.get_device(name)
    if device.type == "cpu":
        torch.set_num_threads(1)
    cl.seed_everything(0)
    return device
