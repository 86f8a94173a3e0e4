"""Speed and strength of course_lib's APGD and Square attack against torchattacks, and the cost of a query.

Run: ``make bench`` (installs torchattacks, a benchmark-only dependency), or
``.venv/bin/python benchmarks/blackbox.py [--rounds 5] [--device cpu|cuda] [--batch-size 256]``.

On a batch of mnist5k test digits and the zoo's PGD-trained CNN (``cl.zoo.load("mnist5k_pgd")``,
L-inf eps = 0.3, so that success rates are neither 0 nor 1), each round times the contenders on
identical inputs, in a rotating order; it prints the median over rounds of the per-round time
ratios and the success rates (fraction of the batch misclassified after the attack):

* APGD, CE and DLR loss: ``course_lib.attacks.apgd`` against ``torchattacks.APGD`` (same eps,
  steps, loss, one restart); target: time ratio <= 1.0, success rate >= theirs;
* Square: ``course_lib.blackbox.square_attack`` against ``torchattacks.Square`` (same eps, query
  budget, ``p_init`` 0.05, one restart); target: time ratio <= 1.0, success rate >= theirs;
* the cost of a query: ``square_attack`` and ``nes_attack`` against a replay of their model
  calls (bare forward passes on the same numbers of rows, under ``torch.no_grad``); target <= 1.1.

On a CPU it times one thread (``torch.set_num_threads(1)``), as ``benchmarks/attacks.py`` does.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import course_lib as cl
from timing import bench_device, timed  # benchmarks/timing.py


class CallLog(torch.nn.Module):
    """Wraps a model and records the number of rows of each call."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(x.shape[0])
        return self.model(x)


def success(model, x_adv, y) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(1) != y).float().mean().item()


def paired(contenders: dict, rounds: int, device) -> dict[str, list[float]]:
    """Per-round times of each contender, in a rotating order (after one warm-up call each)."""
    names = list(contenders)
    for name in names:
        contenders[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(contenders[name], device))
    return times


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(ta / tb for ta, tb in zip(times[a], times[b]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default=None, help="default: course_lib.get_device()")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="APGD iterations")
    parser.add_argument("--queries", type=int, default=300, help="Square and NES query budget")
    args = parser.parse_args()
    import torchattacks  # benchmark-only dependency: `make bench` installs it

    from course_lib import blackbox  # noqa: E402 (lazily: written alongside this benchmark)

    device = bench_device(args.device)
    data = cl.data.load_dataset("mnist5k")
    x, y = (t[: args.batch_size].to(device) for t in data.test.tensors)
    model = cl.zoo.load("mnist5k_pgd", device=device).eval()
    eps = 0.3
    print(f"device {device}, threads {torch.get_num_threads()}, batch {len(x)}, model mnist5k_pgd, eps {eps}, "
          f"torch {torch.__version__}, torchattacks {torchattacks.__version__}")

    for loss in ("ce", "dlr"):
        ta = torchattacks.APGD(model, norm="Linf", eps=eps, steps=args.steps, n_restarts=1, loss=loss, seed=0)
        gen = torch.Generator(device=device)
        out = {}

        def ours(loss=loss, gen=gen, out=out):
            out["ours"] = cl.attacks.apgd(model, x, y, eps, args.steps, loss=loss, generator=gen.manual_seed(0))

        def theirs(ta=ta, out=out):
            out["theirs"] = ta(x, y)

        times = paired({"course_lib": ours, "torchattacks": theirs}, args.rounds, device)
        print(f"APGD-{loss.upper()} {args.steps} steps: course_lib {statistics.median(times['course_lib']) * 1e3:7.1f} ms | "
              f"course_lib / torchattacks = {ratio(times, 'course_lib', 'torchattacks'):.3f} (target <= 1.0) | "
              f"success course_lib {success(model, out['ours'], y):.3f}, torchattacks "
              f"{success(model, out['theirs'], y):.3f} [median of {args.rounds} rounds]")

    q = args.queries
    ta = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=q, n_restarts=1, p_init=0.05, seed=0)
    gen = torch.Generator(device=device)
    out = {}

    def square_ours():
        out["ours"] = blackbox.square_attack(model, x, y, eps, queries=q, p_init=0.05, generator=gen.manual_seed(0))[0]

    def square_theirs():
        out["theirs"] = ta(x, y)

    times = paired({"course_lib": square_ours, "torchattacks": square_theirs}, args.rounds, device)
    print(f"Square {q} queries: course_lib {statistics.median(times['course_lib']):6.2f} s | "
          f"course_lib / torchattacks = {ratio(times, 'course_lib', 'torchattacks'):.3f} (target <= 1.0) | "
          f"success course_lib {success(model, out['ours'], y):.3f}, torchattacks "
          f"{success(model, out['theirs'], y):.3f} (target >= theirs) [median of {args.rounds} rounds]")

    attacks = {
        "square_attack": lambda m: blackbox.square_attack(m, x, y, eps, queries=q, generator=gen.manual_seed(0)),
        "nes_attack": lambda m: blackbox.nes_attack(m, x, y, eps, queries=q, generator=gen.manual_seed(0)),
    }
    for name, attack in attacks.items():
        log = CallLog(model)
        attack(log)  # the model calls one run makes: replayed as bare forward passes
        rows = list(log.rows)
        inputs = {n: x.new_empty(n, *x.shape[1:]).uniform_() for n in set(rows)}

        def replay(rows=rows, inputs=inputs):
            with torch.no_grad():
                for n in rows:
                    model(inputs[n])

        times = paired({"attack": lambda attack=attack: attack(model), "replay": replay}, args.rounds, device)
        print(f"{name} {q} queries: {len(rows)} model calls, {sum(rows)} rows | attack / bare forward passes "
              f"= {ratio(times, 'attack', 'replay'):.3f} (target <= 1.1) [median of {args.rounds} rounds]")


if __name__ == "__main__":
    main()
