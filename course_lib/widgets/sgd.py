"""Interactive widgets for live demos (ipywidgets 8).

:func:`sgd_explorer`: step size and batch size sliders over a 2-parameter
least-squares landscape, redrawing the SGD path (and the full-batch GD path for
reference) each time a slider is released.

The picture is drawn on a matplotlib ``Figure`` that belongs to no pyplot state and
is shown through an ``ipywidgets.Image`` (PNG), so it works with any matplotlib
backend, needs no ipympl, and ``explorer.figure`` can be displayed on its own as
the static version of the demo (a saved notebook does not keep live widgets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import ipywidgets as widgets
import torch
from torch import Tensor

from course_lib import _checks, optim
from course_lib.widgets.explorer import Explorer, new_figure
from course_lib.widgets.plots import plot_landscape


class FiniteSum(Protocol):
    """A loss ``F(w) = 1/n sum_i f_i(w)`` over 2 parameters, e.g.
    :class:`course_lib.objectives.LeastSquares` from ``make_regression_2d``."""

    n: int

    def loss(self, w: Tensor, idx: Tensor | None = None) -> Tensor: ...

    def grad(self, w: Tensor, idx: Tensor | None = None) -> Tensor: ...


class SGDExplorer(Explorer):
    """Sliders for ``lr`` and ``batch_size`` above a picture of the SGD path.

    Build it with :func:`sgd_explorer`. Attributes:

    * ``lr``, ``batch_size``: the sliders (``FloatLogSlider``, ``IntSlider``);
      set ``.value`` to move them from code.
    * ``image``: the ``ipywidgets.Image`` showing the current picture (PNG bytes).
    * ``figure``, ``ax``: the matplotlib Figure and Axes behind it.
    * ``path``: the SGD iterates last drawn, (steps + 1, 2); ``gd_path`` the GD ones.
    """

    def __init__(self, problem: FiniteSum, w0: Tensor, *, lr: float, batch_size: int,
                 steps: int, seed: int, lr_range: tuple[float, float],
                 xlim: Sequence[float], ylim: Sequence[float],
                 figsize: tuple[float, float]) -> None:
        self.problem, self.w0, self.steps, self.seed = problem, w0, steps, seed
        self.xlim, self.ylim = tuple(xlim), tuple(ylim)
        self.L = getattr(problem, "L", None)
        self.minimizer = getattr(problem, "w_star", None)
        self.lr = widgets.FloatLogSlider(
            value=lr, base=10, min=math.log10(lr_range[0]), max=math.log10(lr_range[1]),
            step=0.05, description="lr", continuous_update=False, readout_format=".3g")
        self.batch_size = widgets.IntSlider(
            value=batch_size, min=1, max=problem.n, description="batch size",
            continuous_update=False, style={"description_width": "initial"})
        figure = new_figure(figsize)
        self.ax = figure.add_subplot()
        self.path: Tensor = torch.empty(0, 2)
        self.gd_path: Tensor = torch.empty(0, 2)
        super().__init__([self.lr, self.batch_size], figure)

    def draw(self) -> None:
        """Rerun SGD and GD with the sliders' values and draw them."""
        lr, b = float(self.lr.value), int(self.batch_size.value)
        gen = torch.Generator().manual_seed(self.seed)  # same sliders, same path
        self.path = optim.sgd_path(self.problem.grad, self.w0, lr, self.steps, n=self.problem.n,
                                   batch_size=b, generator=gen)
        self.gd_path = optim.gd_path(self.problem.grad, self.w0, lr, self.steps)
        self.ax.clear()
        paths = {f"SGD, batch size {b}": self.path, "GD (full batch)": self.gd_path}
        plot_landscape(self.problem.loss, paths, ax=self.ax, xlim=self.xlim, ylim=self.ylim,
                       minimizer=self.minimizer)
        final = self.problem.loss(self.path[-1])
        title = f"lr = {lr:.3g}, {self.steps} steps: final loss {float(final):.3g}"
        if self.L is not None:
            title += f"\n(2/L = {2 / self.L:.3g}: {'GD diverges' if lr > 2 / self.L else 'GD converges'})"
        self.ax.set_title(title, fontsize="medium")


def sgd_explorer(problem: FiniteSum, w0: Tensor, *, lr: float = 1.0, batch_size: int = 10,
                 steps: int = 60, seed: int = 0, lr_range: tuple[float, float] = (0.01, 4.0),
                 xlim: Sequence[float] = (-2.0, 5.0), ylim: Sequence[float] = (-5.0, 4.0),
                 figsize: tuple[float, float] = (6.0, 4.5)) -> SGDExplorer:
    """Step size and batch size sliders over a 2-D loss landscape, SGD path drawn.

    Args:
        problem: a finite sum over 2 parameters with ``n``, ``loss(W)`` for points
            (..., 2) and ``grad(w, idx)``, e.g. ``course_lib.objectives.make_regression_2d()``.
            Its ``L`` (if present) is quoted in the title, its ``w_star`` marked.
        w0: starting point, shape (2,).
        lr: initial step size, inside ``lr_range``.
        batch_size: initial examples per stochastic gradient, in [1, problem.n].
        steps: SGD updates per picture, >= 1.
        seed: seeds the minibatch draws, so a setting always shows the same path.
        lr_range: ``(low, high)`` of the log-scale step size slider, 0 < low < high.
        xlim, ylim: the plotted box.
        figsize: the picture's size in inches.

    Returns:
        An :class:`SGDExplorer` (an ``ipywidgets.VBox``); display it in a notebook.

    Raises:
        ValueError: if ``w0`` is not (2,), ``steps < 1``, ``lr_range`` is not
            ``0 < low < high``, ``lr`` is outside it, or ``batch_size`` is outside [1, n].

    Examples:
        >>> from course_lib.objectives import make_regression_2d
        >>> explorer = sgd_explorer(make_regression_2d(n=20), torch.zeros(2), lr=0.5, batch_size=4, steps=5)
        >>> explorer.path.shape
        torch.Size([6, 2])
        >>> explorer.batch_size.value = 20  # moves the slider: the picture is redrawn
    """
    if not isinstance(w0, Tensor) or w0.shape != (2,):
        got = tuple(w0.shape) if isinstance(w0, Tensor) else type(w0).__name__
        raise _checks.fail("w0", "a tensor of shape (2,)", got)
    steps = _checks.integer(steps, "steps", ge=1)
    seed = _checks.integer(seed, "seed", ge=0)
    try:
        low, high = lr_range
        low = _checks.number(low, "lr_range", gt=0)
        high = _checks.number(high, "lr_range", gt=low)
    except (TypeError, ValueError):
        raise _checks.fail("lr_range", "(low, high) with 0 < low < high", lr_range) from None
    lr = _checks.number(lr, "lr", ge=low, le=high)
    batch_size = _checks.integer(batch_size, "batch_size", ge=1, le=problem.n)
    return SGDExplorer(problem, w0, lr=lr, batch_size=batch_size, steps=steps, seed=seed,
                       lr_range=(low, high), xlim=xlim, ylim=ylim, figsize=figsize)
