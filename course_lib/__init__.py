"""course_lib: the small PyTorch library behind the Robust and Trustworthy ML course.

Public API (see ``../shared/COURSE.md``):

* :func:`get_device`, :func:`seed_everything` (this module)
* :mod:`course_lib.data`: ``load_dataset(name, ...)``
* :mod:`course_lib.models`: small MLP and CNN builders
* :mod:`course_lib.train`: ``train(...)``, ``evaluate(...)``
* :mod:`course_lib.optim`: gradient descent and SGD written from scratch (lecture 1)
* :mod:`course_lib.grading`: ``python -m course_lib.grading`` autogrades a class

Tensors in, tensors out, on whatever device the input is on.
"""

from __future__ import annotations

from course_lib import attacks, data, models, objectives, optim, train
from course_lib.device import get_device, seed_everything

__all__ = ["attacks", "data", "get_device", "models", "objectives", "optim", "seed_everything", "train"]
__version__ = "0.1.0"
