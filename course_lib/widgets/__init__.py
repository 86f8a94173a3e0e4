"""What the lectures show: plots and the interactive explorers (matplotlib, ipywidgets).

One module per lecture topic, all on :mod:`course_lib.widgets.explorer`:

* :mod:`~course_lib.widgets.plots`: loss landscapes, curves and training histories (lecture 1 on)
* :mod:`~course_lib.widgets.sgd`: the step size / batch size explorer (lecture 1)
* :mod:`~course_lib.widgets.attacks`: pictures of attacks and the eps explorer (lecture 2)
* :mod:`~course_lib.widgets.ibp`: interval widths layer by layer (lecture 4)
* :mod:`~course_lib.widgets.smoothing`: the smoothed classifier and Neyman-Pearson (lecture 5)
* :mod:`~course_lib.widgets.poisoning`: the poison point's path and boundary (lecture 6)
* :mod:`~course_lib.widgets.blackbox`: the query-budget explorer of black-box attacks (lecture 8)
* :mod:`~course_lib.widgets.smoothllm`: SmoothLLM's copies and vote, q and N sliders (lecture 9)
* :mod:`~course_lib.widgets.poisoning_deep`: margins certified against k poisoned points, a k slider (lecture 10)

Submodules load on first use (``cl.widgets.attacks``), like :mod:`course_lib` itself.
"""

from __future__ import annotations

import importlib

__all__ = ["attacks", "blackbox", "explorer", "ibp", "plots", "poisoning", "poisoning_deep", "sgd", "sgd_explorer", "smoothing", "smoothllm"]


def __getattr__(name: str):
    if name == "sgd_explorer":  # lecture 1 calls cl.widgets.sgd_explorer
        return importlib.import_module("course_lib.widgets.sgd").sgd_explorer
    if name in __all__:
        return importlib.import_module(f"course_lib.widgets.{name}")
    raise AttributeError(f"module 'course_lib.widgets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
