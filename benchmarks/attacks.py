"""Speed of course_lib's PGD against torchattacks and against a bare gradient loop.

Run: ``make bench`` (installs torchattacks, a benchmark-only dependency), or
``.venv/bin/python benchmarks/attacks.py [--rounds 15] [--device cpu|cuda]``.

For PGD L-inf with 10 and 40 steps on a batch of 256 mnist5k digits and the course's
CNN, each round times three contenders on identical inputs, in a rotating order:

* ``course_lib``: ``course_lib.attacks.pgd``;
* ``torchattacks``: ``torchattacks.PGD`` (same eps, alpha, steps, random start);
* ``bare loop``: the same number of forward + input-gradient passes and nothing else
  (no projection, no clipping): the floor any PGD implementation pays.

It prints the median over rounds of the per-round ratios course_lib / torchattacks
(target <= 1.0) and course_lib / bare loop (target <= 1.15). On a CPU it times one
thread (``torch.set_num_threads(1)``): on a shared 2-core machine, separate best-of-N
blocks swing by 30% on identical work, while per-round ratios stay stable. It also
prints the time of one PGD-AT epoch on mnist5k (4,000 digits, batches of 128, PGD-10).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

import course_lib as cl
from timing import bench_device, timed  # benchmarks/timing.py


def bare_loop(model, x, y, steps):
    """``steps`` forward passes and input gradients: the cost floor of PGD."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = x_adv.detach()
    return x_adv



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default=None, help="default: course_lib.get_device()")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--skip-training", action="store_true", help="skip the PGD-AT epoch")
    args = parser.parse_args()
    import torchattacks  # benchmark-only dependency: `make bench` installs it

    device = bench_device(args.device)
    data = cl.data.load_dataset("mnist5k")
    x, y = (t[: args.batch_size].to(device) for t in data.test.tensors)
    model = cl.models.cnn(data.input_shape, data.num_classes).to(device).eval()
    eps = 0.3
    print(f"device {device}, threads {torch.get_num_threads()}, batch {len(x)}, "
          f"torch {torch.__version__}, torchattacks {torchattacks.__version__}")
    for steps in (10, 40):
        alpha = 2.5 * eps / steps
        ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        contenders = {
            "course_lib": lambda: cl.attacks.pgd(model, x, y, eps, alpha, steps),
            "torchattacks": lambda: ta(x, y),
            "bare loop": lambda: bare_loop(model, x, y, steps),
        }
        names = list(contenders)
        for name in names:  # warm-up
            contenders[name]()
        ratio_ta, ratio_bare, ours = [], [], []
        for r in range(args.rounds):
            order = names[r % 3:] + names[:r % 3]  # rotate who goes first
            t = {name: timed(contenders[name], device) for name in order}
            ratio_ta.append(t["course_lib"] / t["torchattacks"])
            ratio_bare.append(t["course_lib"] / t["bare loop"])
            ours.append(t["course_lib"])
        print(f"PGD-{steps}: course_lib {statistics.median(ours) * 1e3:7.1f} ms | "
              f"course_lib / torchattacks = {statistics.median(ratio_ta):.3f} (target <= 1.0) | "
              f"course_lib / bare loop = {statistics.median(ratio_bare):.3f} (target <= 1.15) "
              f"[median of {args.rounds} rounds]")
    if not args.skip_training:
        train_loader, _ = data.loaders(batch_size=128)
        model = cl.models.cnn(data.input_shape, data.num_classes).to(device)

        def pgd_at_loss(m, xb, yb):  # Danskin: the outer gradient is taken at the inner maximizer
            return cl.train.cross_entropy_loss(m, cl.attacks.pgd(m, xb, yb, eps, 2.5 * eps / 10, 10), yb)

        loss_fn = getattr(cl.train, "adversarial_loss", None)
        if loss_fn is not None:
            pgd_at_loss = loss_fn(lambda m, xb, yb, e: cl.attacks.pgd(m, xb, yb, e, 2.5 * e / 10, 10), eps)
        seconds = timed(lambda: cl.train.train(model, train_loader, epochs=1, batch_loss=pgd_at_loss,
                                               progress=False), device)
        print(f"one PGD-10 adversarial training epoch on mnist5k (4,000 digits, batch 128): {seconds:.1f} s")


if __name__ == "__main__":
    main()
