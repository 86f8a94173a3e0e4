"""Speed of course_lib's feature collision against the extractor's own forward and backward pass.

Run: ``.venv/bin/python benchmarks/feature_collision.py [--rounds 15] [--device cpu|cuda]``.

A forward-backward splitting iteration of Poison Frogs (Algorithm 1) costs one forward pass of the
extractor and one gradient with respect to the images, plus a few elementwise operations (the
proximal step and the clip). Each round times, in a rotating order, on identical inputs (a batch
of 64 pairs of mnist5k-sized images, the course's CNN trunk as the extractor, the one
:mod:`course_lib.transfer_poisoning` trains):

* ``course_lib``: ``feature_collision(extractor, target, base, beta, steps=S, lr)``, S = 20;
* ``bare loop``: S forward passes and input gradients of ``||f(p) - f(t)||^2`` and nothing else
  (no proximal step, no clipping, no argument checks): the floor any implementation pays;

and also one ``forward_backward_step`` against one bare forward + backward. It prints the medians
over rounds of the per-round ratios course_lib / bare loop (target <= 1.2). On a CPU it times one
thread (``torch.set_num_threads(1)``): on a shared 2-core machine, separate best-of-N blocks swing
by 30% on identical work, while per-round ratios stay stable.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import course_lib as cl
from course_lib import feature_collision as fc
from timing import bench_device, timed  # benchmarks/timing.py


def bare_loop(extractor, poison, target_features, steps):
    """``steps`` forward passes and input gradients of the feature distance: the cost floor."""
    p = poison
    for _ in range(steps):
        p = p.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad((extractor(p) - target_features).pow(2).sum(), p)
    return grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default=None, help="default: course_lib.get_device()")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    device = bench_device(args.device)
    data = cl.data.load_dataset("mnist5k")
    x = data.test.tensors[0]
    n = args.batch_size
    target, base = x[:n].to(device), x[n:2 * n].to(device)
    model = cl.models.cnn(data.input_shape, 8)
    extractor = model[:5].to(device).eval().requires_grad_(False)  # conv trunk through Flatten, as train_extractor
    with torch.no_grad():
        target_features = extractor(target)
    beta, lr, steps = 0.1, 0.01, args.steps
    print(f"device {device}, threads {torch.get_num_threads()}, batch {n}, torch {torch.__version__}, "
          f"extractor {tuple(x.shape[1:])} -> {target_features.shape[1]} features")
    races = {
        f"{steps} steps": {
            "course_lib": lambda: fc.feature_collision(extractor, target, base, beta=beta, steps=steps, lr=lr),
            "bare loop": lambda: bare_loop(extractor, base, target_features, steps),
        },
        "one step": {
            "course_lib": lambda: fc.forward_backward_step(extractor, base, target_features, base, beta=beta, lr=lr),
            "bare loop": lambda: bare_loop(extractor, base, target_features, 1),
        },
    }
    for race, contenders in races.items():
        names = list(contenders)
        for name in names:  # warm-up
            contenders[name]()
        ratios, ours = [], []
        for r in range(args.rounds):
            order = names[r % 2:] + names[:r % 2]  # alternate who goes first
            t = {name: timed(contenders[name], device) for name in order}
            ratios.append(t["course_lib"] / t["bare loop"])
            ours.append(t["course_lib"])
        print(f"{race:>9}: course_lib {statistics.median(ours) * 1e3:8.2f} ms | course_lib / bare forward+backward = "
              f"{statistics.median(ratios):.3f} (target <= 1.2) [median of {args.rounds} rounds]")


if __name__ == "__main__":
    main()
