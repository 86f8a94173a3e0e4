"""Cost of one certified-training step against one ordinary training step.

Run: ``.venv/bin/python benchmarks/certified_training.py [--rounds 21] [--batch-size 128]``.

On one batch of the digits 1-vs-7 task (64 features, float64, the dtype certification uses),
for logistic regression ``nn.Linear(64, 2)`` and an MLP ``64-32-2``, each round times in
alternating order:

* ``ordinary``: one step of :func:`course_lib.certified_training.sgd_train`'s loop: forward,
  mean cross-entropy, ``torch.autograd.grad``, ``p -= lr * g``;
* ``certified``: one :func:`course_lib.certified_training.agt_step` on the same batch, from
  the parameter box two certified steps produce (a box of realistic width), with ``k = 2``, for
  feature poisoning (``eps = 0.1``) and for label flips.

It prints the median over rounds of the per-round ratio certified / ordinary (target <= 4).
One thread (``torch.set_num_threads(1)``): on a shared 2-core machine per-round ratios are
stable where separate best-of-N blocks are not.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from course_lib import certified_training as ct
from course_lib import data
from timing import timed  # benchmarks/timing.py


def ordinary_step(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lr: float) -> None:
    params = list(model.parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(X), y), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(lr * g)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    task = data.binary_task("digits", 7, 1, n_train=args.batch_size, n_val=1, seed=0)
    X = torch.tensor(task["X_train"])
    y = (torch.tensor(task["y_train"]) > 0).long()
    print(f"threads {torch.get_num_threads()}, batch {len(y)}, features {X.shape[1]}, float64, torch {torch.__version__}")
    torch.manual_seed(0)
    models = {"logistic regression": nn.Linear(64, 2).double(),
              "MLP 64-32-2": nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2)).double()}
    for name, model in models.items():
        for threat, kw in (("eps = 0.1", dict(eps=0.1, label_flip=False)),
                           ("label flips", dict(eps=0.0, label_flip=True))):
            # the box after two certified steps: widths of a real run, not a point
            lower, upper = ct.agt_train(model, X, y, k=2, epochs=2, lr=0.1, batch_size=len(y), **kw)
            box = list(zip(lower, upper))
            contenders = {
                "ordinary": lambda: ordinary_step(model, X, y, 0.1),
                "certified": lambda: ct.agt_step(box, X, y, k=2, lr=0.1, num_classes=2, **kw),
            }
            for fn in contenders.values():  # warm-up
                fn()
            ratios, certified = [], []
            for r in range(args.rounds):
                order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
                t = {n: timed(contenders[n], device) for n in order}
                ratios.append(t["certified"] / t["ordinary"])
                certified.append(t["certified"])
            print(f"{name:20s} {threat:12s}: certified step {statistics.median(certified) * 1e3:6.2f} ms | "
                  f"certified / ordinary = {statistics.median(ratios):5.2f} (target <= 4) "
                  f"[median of {args.rounds} rounds]")


if __name__ == "__main__":
    main()
