"""Speed of certification: IBP and CROWN against one forward pass, CERTIFY against the base network.

Run: ``.venv/bin/python benchmarks/certify.py [--rounds 15] [--device cpu|cuda]
[--only ibp|crown|smoothing]``.

* **IBP.** ``ibp.ibp_bounds(model, x, eps)`` pushes a centre and a radius through every layer
  (the centre with W, the radius with |W|): two passes of the network's linear work, so two
  forward passes is the floor. Each round times ``model(x)`` and ``ibp_bounds(model, x, eps)``
  on the same batch, under ``torch.no_grad()``, in alternating order; the script prints the
  median over rounds of the per-round ratio ibp / forward (target <= 2.5). A ratio a little
  under 2 can happen on a CPU: the forward pass allocates a fresh tensor for every ReLU's
  output, while IBP without autograd works in place.
* **CROWN.** ``crown.crown_bounds(model, x, eps, C=C, method=..., lower_only=True)`` with
  certification's specification ``C`` (the K - 1 margins ``e_y - e_j``, j != y; only their lower
  bounds, as ``crown.certify`` asks) carries R = K - 1 = 9 linear bounds backward.
  ``method="crown-ibp"`` is one IBP pass (2 forward passes of work) and one backward pass whose
  every step costs R times the forward step (``A W`` for R rows instead of ``W z`` for one): its
  floor is 2 + R = 11 forward passes, (2 + R) / 2 = 5.5 IBP passes. ``method="crown"`` also
  bounds every ReLU's input by a backward pass of 2 m rows (m: the ReLU's width) through all the
  layers below it (but the first ReLU after one affine layer: its IBP box is exact), so its cost
  grows with depth and width; its floor, printed by the script, is the multiply-adds of all its
  backward passes (and of that IBP step) counted in forward passes (the elementwise ReLU steps
  and the final concretization come on top of both floors). Each round times, on one batch of
  256 under ``torch.no_grad()`` in a rotating order, a block of 10 forward passes, a block of 10
  ``ibp_bounds`` and one ``crown-ibp``; then, over ``--crown-rounds`` rounds (3: seconds each),
  a block of forward passes against one ``crown``. Three networks: lecture 4's MLP (one hidden
  layer of 256), a deeper one (three hidden layers of 256) and the course CNN. On the CNN
  ``crown`` runs on a batch of ``--crown-cnn-batch`` (4), to keep the run short, and its ratio
  is per example, against the forward pass at batch 256 (its hidden-layer rows go in chunks, so
  memory stays near 1.2 GB at any batch). auto_LiRPA, the reference implementation of IBP and
  CROWN, is compared (bounds and time) by ``benchmarks/crown_vs_auto_lirpa.py``, run from its
  source: its only PyPI release (0.3) requires torch < 1.13 and fails to import with NumPy 2.
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
import math
import statistics
from collections.abc import Callable

import torch
from torch import nn

import course_lib as cl
from course_lib import crown, ibp, layers
from course_lib.specification import margin_spec
from course_lib.smoothing import Smooth
from timing import bench_device, timed  # benchmarks/timing.py


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


def crown_costs(model: nn.Module, shape: tuple[int, ...], rows: int) -> tuple[float, float, int]:
    """CROWN's floors in forward passes and its biggest coefficient tensor per example.

    Counts the multiply-adds of Linear and Conv2d layers, per example: ``crown-ibp`` pulls
    ``rows`` bounds back through every layer (plus 2 forward passes for IBP), ``crown`` also
    2 m bounds back from each ReLU of width m through the layers below it, except the first
    ReLU after one affine layer: its IBP box is exact, and free.

    Returns:
        ``(crown floor, crown-ibp floor, bytes)``: ``bytes`` the largest coefficient tensor
        ``crown`` holds for one example, 2 m rows over the widest layer input below a ReLU.
    """
    sequence = layers.layers_of(model)
    z, work, sizes, relus = torch.zeros(1, *shape, device=next(model.parameters()).device), [], [], []
    with torch.no_grad():
        for i, layer in enumerate(sequence):
            out = layer(z)
            if isinstance(layer, nn.Linear):
                work.append(layer.in_features * layer.out_features)
            elif isinstance(layer, nn.Conv2d):
                work.append(out.numel() * layer.in_channels // layer.groups * math.prod(layer.kernel_size))
            else:
                work.append(0)
            sizes.append(z.numel())
            if isinstance(layer, nn.ReLU):
                relus.append((i, z.numel()))
            z = out
    total = sum(work)
    crown_work = rows * total
    if relus and sum(w > 0 for w in work[:relus[0][0]]) <= 1:  # the first ReLU's bounds: the box
        crown_work += 2 * sum(work[:relus[0][0]])                # of one affine map, exact, by IBP
        relus = relus[1:]
    crown_work += sum(2 * m * sum(work[:i]) for i, m in relus)
    biggest = max([2 * m * max(sizes[:i + 1]) for i, m in relus] + [rows * max(sizes)])
    return crown_work / total, 2 + rows, biggest * z.element_size()


def _block(fn: Callable[[], object], calls: int) -> Callable[[], object]:
    """``calls`` calls of fn: the first call of a block pays for fresh CPU pages."""
    return lambda: [fn() for _ in range(calls)]


def bench_crown(name: str, model: nn.Module, shape: tuple[int, ...], device: torch.device, *,
                batch_size: int, crown_batch: int, eps: float, rounds: int, crown_rounds: int) -> dict[str, float]:
    model = model.to(device).eval()
    x = torch.rand((batch_size, *shape), device=device)
    with torch.no_grad():
        k = model(x[:1]).shape[1]
    C = margin_spec(torch.randint(0, k, (batch_size,), device=device), k)
    rows = C.shape[1]  # a lower bound on every margin (lower_only, as crown.certify)
    crown_floor, ibp_floor, biggest = crown_costs(model, shape, rows)
    calls = 10

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def bounds(method: str, n: int = batch_size) -> Callable[[], object]:
        def run() -> None:
            with torch.no_grad():
                crown.crown_bounds(model, x[:n], eps, C=C[:n], method=method, lower_only=True)
        return run

    def ibp_bounds() -> None:
        with torch.no_grad():
            ibp.ibp_bounds(model, x, eps)

    seconds = rounds_of({"forward": _block(forward, calls), "ibp_bounds": _block(ibp_bounds, calls),
                         "crown-ibp": bounds("crown-ibp")}, device, rounds)
    for key in ("forward", "ibp_bounds"):
        seconds[key] = [s / calls for s in seconds[key]]
    slow = rounds_of({"forward": _block(forward, calls), "crown": bounds("crown", crown_batch)}, device, crown_rounds)
    # per example: crown on crown_batch examples, the forward pass on batch_size
    per_example = [(c / crown_batch) / (f / calls / batch_size) for f, c in zip(slow["forward"], slow["crown"])]

    def ratio(a: str, b: str) -> float:
        return statistics.median(t / u for t, u in zip(seconds[b], seconds[a]))

    ratios = {"crown": statistics.median(per_example), "crown-ibp": ratio("forward", "crown-ibp"),
              "crown-ibp / ibp": ratio("ibp_bounds", "crown-ibp")}
    print(f"CROWN, {name}, batch {batch_size}, {C.shape[1]} margins ({rows} rows: lower bounds), on {device}:")
    print(f"  forward {statistics.median(seconds['forward']) * 1e3:9.2f} ms   "
          f"ibp_bounds {statistics.median(seconds['ibp_bounds']) * 1e3:9.2f} ms   "
          f"crown-ibp {statistics.median(seconds['crown-ibp']) * 1e3:9.1f} ms   "
          f"crown {statistics.median(slow['crown']) * 1e3:9.1f} ms"
          + (f" (batch {crown_batch})" if crown_batch != batch_size else ""))
    print(f"  crown / forward{' per example' if crown_batch != batch_size else ''}: median "
          f"{ratios['crown']:.0f} (floor {crown_floor:.0f}: {ratios['crown'] / crown_floor:.1f}x; "
          f"its biggest coefficients {biggest / 1e6:.1f} MB per example)")
    print(f"  crown-ibp / forward: median {ratios['crown-ibp']:.1f} (floor {ibp_floor}: "
          f"{ratios['crown-ibp'] / ibp_floor:.1f}x; {ratios['crown-ibp'] / rows:.2f} forward passes per row)")
    print(f"  crown-ibp / ibp_bounds: median {ratios['crown-ibp / ibp']:.1f} (floor about {ibp_floor / 2:.1f})")
    return ratios


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
    parser.add_argument("--only", choices=("ibp", "crown", "smoothing"), default=None,
                        help="run one of the three benchmarks (default: all)")
    parser.add_argument("--crown-rounds", type=int, default=3, help="rounds of method='crown' (seconds each)")
    parser.add_argument("--crown-cnn-batch", type=int, default=4,
                        help="batch of method='crown' on the CNN (seconds per example on one CPU thread)")
    args = parser.parse_args()
    device = bench_device(args.device)
    gpu = device.type == "cuda"
    mnist = (1, 28, 28)
    if args.only in (None, "ibp"):
        bench_ibp("course MLP, 1x28x28", cl.models.mlp(mnist), mnist, device,
                  batch_size=4096 if gpu else 256, eps=0.1, rounds=args.rounds)
        bench_ibp("course CNN, 1x28x28", cl.models.cnn(mnist), mnist, device,
                  batch_size=4096 if gpu else 256, eps=0.1, rounds=args.rounds)
        if gpu:
            bench_ibp("wide CNN, 3x32x32", wide_cnn(), (3, 32, 32), device, batch_size=1024, eps=2 / 255,
                      rounds=args.rounds)
    if args.only in (None, "crown"):
        crown_args = dict(batch_size=256, eps=0.02, rounds=args.rounds, crown_rounds=args.crown_rounds)
        bench_crown("lecture 4's MLP (hidden 256), 1x28x28", cl.models.mlp(mnist, 10, hidden=(256,)), mnist,
                    device, crown_batch=256, **crown_args)
        bench_crown("deeper MLP (hidden 256, 256, 256), 1x28x28", cl.models.mlp(mnist, 10, hidden=(256,) * 3),
                    mnist, device, crown_batch=256, **crown_args)
        bench_crown("course CNN, 1x28x28", cl.models.cnn(mnist), mnist, device,
                    crown_batch=args.crown_cnn_batch, **crown_args)
    if args.only in (None, "smoothing"):
        bench_smoothing("course CNN, 1x28x28", cl.models.cnn(mnist), mnist, device,
                        n0=100, n=100_000 if gpu else 10_000, batch_size=1000, rounds=args.rounds)
        if gpu:
            bench_smoothing("wide CNN, 3x32x32", wide_cnn(), (3, 32, 32), device,
                            n0=100, n=100_000, batch_size=1000, rounds=args.rounds)


if __name__ == "__main__":
    main()
