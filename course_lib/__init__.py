"""course_lib: the small PyTorch library behind the Robust and Trustworthy ML course.

Public API (see ``../shared/COURSE.md``):

* :func:`get_device`, :func:`seed_everything` (:mod:`course_lib.device`)
* :mod:`course_lib.data`: ``load_dataset(name, ...)``
* :mod:`course_lib.models`: small MLP and CNN builders
* :mod:`course_lib.train`: ``train(...)``, ``evaluate(...)``, adversarial training
* :mod:`course_lib.optim`: gradient descent and SGD written from scratch (lecture 1)
* :mod:`course_lib.attacks`: FGSM and PGD (lectures 2 and 3)
* :mod:`course_lib.ibp`: interval bound propagation and certification (lecture 4), with
  :mod:`course_lib.verification` (the LP relaxation and the exact MILP on a tiny network) and
  :mod:`course_lib.rounding` (outward rounding: certificates that hold in floating point)
* :mod:`course_lib.smoothing`: randomized smoothing, ``Smooth`` and Clopper-Pearson (lecture 5)
* :mod:`course_lib.poisoning`: a hinge-loss SVM and the poisoning attack on it (lecture 6)
* :mod:`course_lib.backdoor`, :mod:`course_lib.keyed_backdoor`: BadNets-style backdoors and an
  undetectable, keyed one (lecture 7)
* :mod:`course_lib.grading`: ``python -m course_lib.grading`` autogrades a class

Tensors in, tensors out, on whatever device the input is on.

Submodules load on first use (``cl.attacks`` imports :mod:`course_lib.attacks`), so the
grading tools that run as ``python -m course_lib.<tool>`` do not pay for importing torch.
"""

from __future__ import annotations

import importlib

__all__ = ["attacks", "backdoor", "data", "get_device", "ibp", "keyed_backdoor", "models", "objectives", "optim",
           "poisoning", "rounding", "seed_everything", "smoothing", "train", "verification"]
__version__ = "0.1.0"

_FROM_DEVICE = ("get_device", "seed_everything")


def __getattr__(name: str):
    if name in _FROM_DEVICE:
        return getattr(importlib.import_module("course_lib.device"), name)
    try:
        return importlib.import_module(f"course_lib.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"course_lib.{name}":
            raise AttributeError(f"module 'course_lib' has no attribute {name!r}") from None
        raise


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
