"""CROWN and CROWN-IBP against auto_LiRPA, the reference implementation: the same bounds, and time.

Run: ``PYTHONPATH=/tmp/auto_lirpa:/tmp/lirpa-deps .venv/bin/python benchmarks/crown_vs_auto_lirpa.py
[--rounds 5] [--skip-timing]``; without auto_LiRPA on the path it prints how to set it up.

auto_LiRPA is not a dependency of the course: its setup.py pins torch < 2.9 and its only PyPI
release (0.3) requires torch < 1.13, so it runs from its source with the project's Python, its
two missing pure-Python dependencies in a scratch folder (nothing goes into .venv)::

    git clone https://github.com/Verified-Intelligence/auto_LiRPA /tmp/auto_lirpa
    .venv/bin/python -m pip install --target /tmp/lirpa-deps appdirs graphviz

(tested with auto_LiRPA 0.7.1, the "May 2026 release" a050a3d, on torch 2.14.1 and NumPy 2.4:
no patch needed; it warns that ``torch.jit.script`` is deprecated.)

* **Bounds.** The same box (the L-inf ball of radius eps around x clipped to [0, 1], given to
  auto_LiRPA as ``PerturbationLpNorm(norm=inf, x_L=lo, x_U=hi)``), the same margin
  specification C (N, K-1, K) and float64: ``crown_bounds(model, x, eps, C=C, method=...)``
  against ``BoundedModule(model, ...).compute_bounds(x=(BoundedTensor(x, ptb),), C=C,
  method=...)`` with ``method="CROWN"`` and ``"CROWN-IBP"`` (auto_LiRPA's names; it also
  accepts "ibp+backward"), on random MLPs and CNNs and on the course's networks. Both use
  Zhang et al. 2018's adaptive lower slope of an unstable ReLU (1 if u > -l, else 0):
  auto_LiRPA's default, ``bound_opts={"activation_bound_option": "adaptive"}``, set here to
  be explicit. auto_LiRPA's other defaults stay: for ``CROWN`` it takes the first layer's
  bounds from IBP (exact for one affine layer) and bounds by CROWN only the ReLU inputs that
  IBP does not find stable (``sparse_intermediate_bounds``); both change the time, not the
  bounds (the script checks the second one off as well). The script prints the largest
  difference of a bound; they agree to rounding.
* **Time.** Batch 256 (``crown`` on the CNN: batch 4, see benchmarks/certify.py), float32,
  one thread, both sides of every margin as ``crown_bounds`` computes them; the
  ``BoundedModule`` is built once, outside the timing. Each round times ours and auto_LiRPA's
  in alternating order; the script prints the medians and the median per-round ratio
  auto_LiRPA / ours (> 1: ours is faster), with the largest difference of a float32 bound.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import torch
from torch import nn

import course_lib as cl
from course_lib.crown import crown_bounds
from certify import margin_spec, rounds_of  # benchmarks/certify.py

try:
    from auto_LiRPA import BoundedModule, BoundedTensor
    from auto_LiRPA.perturbations import PerturbationLpNorm
except ImportError as error:
    BoundedModule = None
    MISSING = error

METHODS = {"crown": "CROWN", "crown-ibp": "CROWN-IBP"}  # ours: auto_LiRPA's
OPTIONS = {"activation_bound_option": "adaptive"}


def lirpa_bounds(module, x: torch.Tensor, eps: float, C: torch.Tensor, method: str):
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    box = BoundedTensor(x, PerturbationLpNorm(norm=math.inf, x_L=lo, x_U=hi))
    return module.compute_bounds(x=(box,), C=C, method=METHODS[method])


def bounded(model: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, **options) -> object:
    return BoundedModule(model, torch.zeros(1, *shape, dtype=dtype), bound_opts={**OPTIONS, **options},
                         device="cpu", verbose=0)


def random_mlp(widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10))


def agreement() -> float:
    """Largest |ours - auto_LiRPA| over every bound of every case, in float64."""
    mnist = (1, 28, 28)
    cases = [(f"random MLP {'-'.join(map(str, w))}", random_mlp(w), (w[0],), eps)
             for w, eps in [((20, 30, 10), 0.1), ((20, 50, 40, 10), 0.05), ((30, 64, 64, 64, 10), 0.05),
                            ((784, 256, 256, 256, 10), 0.01)]]
    cases += [("random CNN 1x12x12", small_cnn(), (1, 12, 12), 0.05),
              ("lecture 4's MLP", cl.models.mlp(mnist, 10, hidden=(256,)), mnist, 0.02),
              ("course CNN", cl.models.cnn(mnist), mnist, 0.02)]
    worst = 0.0
    print("Bounds, float64, |ours - auto_LiRPA| (largest over examples, margins, lower and upper;"
          " mean width of ours in brackets):")
    for name, model, shape, eps in cases:
        model = model.double().eval()
        n = 2 if name == "course CNN" else 8  # crown on the course CNN: 0.16 GB per example in float64
        x = torch.rand(n, *shape, dtype=torch.float64)
        C = margin_spec(torch.randint(0, 10, (n,)), 10).double()
        line = []
        for sparse in (True, False):
            module = bounded(model, shape, torch.float64, sparse_intermediate_bounds=sparse)
            for method in METHODS:
                with torch.no_grad():
                    ours = crown_bounds(model, x, eps, C=C, method=method)
                    theirs = lirpa_bounds(module, x, eps, C, method)
                diff = max((a - b).abs().max().item() for a, b in zip(ours, theirs))
                worst = max(worst, diff)
                if sparse:
                    line.append(f"{method} {diff:.1e} [{(ours[1] - ours[0]).mean().item():.3g}]")
                else:
                    line.append(f"{method}, not sparse, {diff:.1e}")
        print(f"  {name:32s} " + "   ".join(line))
    print(f"  largest difference: {worst:.1e}")
    return worst


def timing(rounds: int, crown_cnn_batch: int) -> None:
    torch.set_num_threads(1)
    mnist = (1, 28, 28)
    nets = [("lecture 4's MLP (hidden 256)", cl.models.mlp(mnist, 10, hidden=(256,))),
            ("deeper MLP (hidden 256, 256, 256)", cl.models.mlp(mnist, 10, hidden=(256,) * 3)),
            ("course CNN", cl.models.cnn(mnist))]
    device = torch.device("cpu")
    for name, model in nets:
        model.eval()
        module = bounded(model, mnist, torch.float32)
        for method in METHODS:
            n = crown_cnn_batch if (name == "course CNN" and method == "crown") else 256
            x = torch.rand(n, *mnist)
            C = margin_spec(torch.randint(0, 10, (n,)), 10)
            with torch.no_grad():
                ours = crown_bounds(model, x, 0.02, C=C, method=method)
                theirs = lirpa_bounds(module, x, 0.02, C, method)
            diff = max((a - b).abs().max().item() for a, b in zip(ours, theirs))
            scale = max(b.abs().max().item() for b in ours)

            def run_ours() -> None:
                with torch.no_grad():
                    crown_bounds(model, x, 0.02, C=C, method=method)

            def run_theirs() -> None:
                with torch.no_grad():
                    lirpa_bounds(module, x, 0.02, C, method)

            seconds = rounds_of({"ours": run_ours, "auto_LiRPA": run_theirs}, device, rounds)
            ratio = statistics.median(t / o for o, t in zip(seconds["ours"], seconds["auto_LiRPA"]))
            print(f"{method:9s} {name}, batch {n}: ours {statistics.median(seconds['ours']) * 1e3:8.1f} ms   "
                  f"auto_LiRPA {statistics.median(seconds['auto_LiRPA']) * 1e3:8.1f} ms   "
                  f"auto_LiRPA / ours: median {ratio:.2f}   (float32 bounds differ by {diff:.1e}, "
                  f"largest |bound| {scale:.3g})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crown-cnn-batch", type=int, default=4)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    if BoundedModule is None:
        print(f"auto_LiRPA is not importable ({MISSING}). Set it up in a scratch folder, not in .venv:\n"
              "  git clone https://github.com/Verified-Intelligence/auto_LiRPA /tmp/auto_lirpa\n"
              "  .venv/bin/python -m pip install --target /tmp/lirpa-deps appdirs graphviz\n"
              "then run: PYTHONPATH=/tmp/auto_lirpa:/tmp/lirpa-deps .venv/bin/python benchmarks/crown_vs_auto_lirpa.py")
        sys.exit(0)
    cl.seed_everything(0)
    agreement()
    if not args.skip_timing:
        print(f"Time, float32, one thread, median over {args.rounds} rounds:")
        timing(args.rounds, args.crown_cnn_batch)


if __name__ == "__main__":
    main()
