"""Speed of certification: IBP against one forward pass, CERTIFY against the base network.

Run: ``.venv/bin/python benchmarks/certify.py [--rounds 15] [--device cpu|cuda]``.

* **IBP.** ``ibp.ibp_bounds(model, x, eps)`` pushes a centre and a radius through every layer
  (the centre with W, the radius with |W|): two passes of the network's linear work, so two
  forward passes is the floor. Each round times ``model(x)`` and ``ibp_bounds(model, x, eps)``
  on the same batch, under ``torch.no_grad()``, in alternating order; the script prints the
  median over rounds of the per-round ratio ibp / forward (target <= 2.5). A ratio a little
  under 2 can happen on a CPU: the forward pass allocates a fresh tensor for every ReLU's
  output, while IBP without autograd works in place.
  auto_LiRPA, the reference implementation of IBP and CROWN, is not timed: its only PyPI
  release (0.3) requires torch < 1.13 and fails to import with NumPy 2.
* **Randomized smoothing.** ``Smooth.certify(x, n0, n, alpha, batch_size)`` runs n0 + n
  forward passes of the base classifier on noisy copies of one input; drawing the noise,
  the argmax, the counting and the Clopper-Pearson bound should cost almost nothing beside
  them. Each round times the base network on n0 + n inputs in batches of ``batch_size``
  (under ``torch.no_grad()``, argmax included) against ``certify`` and ``certify_batch`` (8
  inputs) at the same batch size, in a rotating order; the script prints the median of the
  per-round throughput ratios certify / forward (target >= 0.9).

On a CPU every contender runs on one thread (``torch.set_num_threads(1)``), as COURSE.md asks
for a 2-core machine shared with other work; on a GPU the batches are larger and a wider
CIFAR-sized CNN is timed as well.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn

import course_lib as cl
from course_lib import ibp
from course_lib.smoothing import Smooth
from timing import timed  # benchmarks/timing.py



def wide_cnn(num_classes: int = 10) -> nn.Sequential:
    """A CIFAR-sized CNN (3x32x32 inputs), heavier than the course's, for the GPU."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(128 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, num_classes))


def rounds_of(contenders: dict[str, Callable[[], object]], device: torch.device, rounds: int,
              repeat: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each contender, per round, the order rotating round by round."""
    for fn in contenders.values():  # warm-up
        fn()
    names = list(contenders)
    seconds: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            seconds[k].append(timed(lambda: [contenders[k]() for _ in range(repeat)], device) / repeat)
    return seconds


def bench_ibp(name: str, model: nn.Module, shape: tuple[int, ...], device: torch.device, *,
              batch_size: int, eps: float, rounds: int) -> float:
    model = model.to(device).eval()
    x = torch.rand((batch_size, *shape), device=device)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def bounds() -> None:
        with torch.no_grad():
            ibp.ibp_bounds(model, x, eps)

    repeat = 20  # a block of calls per round: the first call of a block pays for fresh CPU pages
    seconds = rounds_of({"forward": forward, "ibp_bounds": bounds}, device, rounds, repeat)
    ratio = statistics.median(b / f for f, b in zip(seconds["forward"], seconds["ibp_bounds"]))
    print(f"IBP, {name}, batch {batch_size}, on {device}:")
    print(f"  forward {statistics.median(seconds['forward']) * 1e3:9.2f} ms   "
          f"ibp_bounds {statistics.median(seconds['ibp_bounds']) * 1e3:9.2f} ms")
    print(f"  ibp_bounds / forward: median {ratio:.2f} (target <= 2.5; 2 is the floor)")
    return ratio


def bench_smoothing(name: str, model: nn.Module, shape: tuple[int, ...], device: torch.device, *,
                    n0: int, n: int, batch_size: int, rounds: int) -> float:
    model = model.to(device).eval()
    x = torch.rand(shape, device=device)
    batch = torch.rand((batch_size, *shape), device=device)
    smooth = Smooth(model, 10, 0.25)
    total = n0 + n
    xs = x.expand(8, *shape).contiguous()

    def forward() -> None:
        with torch.no_grad():
            for start in range(0, total, batch_size):
                model(batch[:min(batch_size, total - start)]).argmax(1)

    seconds = rounds_of({
        "forward": forward,
        "certify": lambda: smooth.certify(x, n0, n, 0.001, batch_size),
        "certify_batch": lambda: smooth.certify_batch(xs, n0, n, 0.001, batch_size),
    }, device, rounds)
    samples = {"forward": total, "certify": total, "certify_batch": 8 * total}
    print(f"Randomized smoothing, {name}, batch {batch_size}, n0 + n = {total}, on {device}:")
    for k, s in seconds.items():
        print(f"  {k:14s} {statistics.median(samples[k] / t for t in s):12,.0f} samples/s")
    ratios = {k: statistics.median((samples[k] / t) / (total / f) for f, t in zip(seconds["forward"], seconds[k]))
              for k in ("certify", "certify_batch")}
    for k, r in ratios.items():
        print(f"  {k} / forward throughput: median {r:.3f} (target >= 0.9)")
    return ratios["certify"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: course_lib.get_device())")
    args = parser.parse_args()
    device = cl.get_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    cl.seed_everything(0)
    gpu = device.type == "cuda"
    mnist = (1, 28, 28)
    bench_ibp("course MLP, 1x28x28", cl.models.mlp(mnist), mnist, device,
              batch_size=4096 if gpu else 256, eps=0.1, rounds=args.rounds)
    bench_ibp("course CNN, 1x28x28", cl.models.cnn(mnist), mnist, device,
              batch_size=4096 if gpu else 256, eps=0.1, rounds=args.rounds)
    if gpu:
        bench_ibp("wide CNN, 3x32x32", wide_cnn(), (3, 32, 32), device, batch_size=1024, eps=2 / 255,
                  rounds=args.rounds)
    bench_smoothing("course CNN, 1x28x28", cl.models.cnn(mnist), mnist, device,
                    n0=100, n=100_000 if gpu else 10_000, batch_size=1000, rounds=args.rounds)
    if gpu:
        bench_smoothing("wide CNN, 3x32x32", wide_cnn(), (3, 32, 32), device,
                        n0=100, n=100_000, batch_size=1000, rounds=args.rounds)


if __name__ == "__main__":
    main()
