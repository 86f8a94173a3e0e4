"""Pictures of SVM poisoning in 2-D, and a widget to move the poison point by hand (lecture 6).

:func:`plot_poisoning` draws the data, both boundaries, the poison point and, optionally,
the attack's path over the loss surface.
:func:`poison_explorer`: two sliders for the poison point's coordinates and a label switch
above that picture (an :class:`~course_lib.widgets.explorer.Explorer`).

The numbers come from the library: :func:`course_lib.poisoning.poisoned_boundary` retrains
the SVM with one poison point, :func:`course_lib.poisoning.loss_surface` evaluates the
attacker's objective on a grid (both importable from here too, as lecture 6 does).

Names follow :mod:`course_lib.poisoning`: ``w, b`` the SVM, ``C`` its constant (mean-hinge
primal), ``x_poison, y_poison`` the poison point and its label in {-1, +1}.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
from matplotlib.axes import Axes

from course_lib import _checks
from course_lib.poisoning import PoisonedBoundary, loss_surface, poisoned_boundary
from course_lib.svm import as_numpy
from course_lib.widgets.explorer import Explorer, new_figure

__all__ = ["PoisonExplorer", "PoisonedBoundary", "loss_surface", "plot_poisoning", "poison_explorer",
           "poisoned_boundary"]


def _line(ax: Axes, w: np.ndarray, b: float, **kwargs) -> None:
    """Draw ``w . x + b = 0`` across the unit square."""
    if abs(w[1]) >= abs(w[0]):
        x1 = np.array([0.0, 1.0])
        ax.plot(x1, -(b + w[0] * x1) / w[1], **kwargs)
    elif w[0] != 0:
        x2 = np.array([0.0, 1.0])
        ax.plot(-(b + w[1] * x2) / w[0], x2, **kwargs)


def plot_poisoning(ax: Axes, X, y, x_poison, y_poison: int, result: PoisonedBoundary, *,
                   path: np.ndarray | None = None, surface: tuple | None = None) -> Axes:
    """Training points, the boundary before (dashed) and after (solid), the poison point.

    Args:
        ax: the Axes to draw on.
        X, y: 2-D training set (n, 2), labels in {-1, +1} (blue +1, orange -1).
        x_poison, y_poison: the poison point (a red star) and its label.
        result: from :func:`poisoned_boundary`.
        path: the poison point's positions (T, 2), e.g. ``history["x"]`` of
            :func:`course_lib.poisoning.poison_svm`, drawn as a red line.
        surface: ``(g1, g2, loss)`` from :func:`loss_surface`, drawn as filled contours.

    Returns:
        ax, titled with the validation errors before and after.
    """
    Xn, yn, xc = as_numpy(X, "X"), as_numpy(y, "y"), as_numpy(x_poison, "x_poison")
    if surface is not None:
        cs = ax.contourf(*surface, levels=15, cmap="Greys", alpha=0.6)
        ax.figure.colorbar(cs, ax=ax, label="validation hinge loss")
    for label, color in ((1.0, "tab:blue"), (-1.0, "tab:orange")):
        pts = Xn[yn == label]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, c=color, label=f"y = {label:+.0f}")
    _line(ax, result.w_clean, result.b_clean, color="k", ls="--", lw=1, label="clean SVM")
    _line(ax, result.w_poisoned, result.b_poisoned, color="tab:red", lw=1.5, label="poisoned SVM")
    if path is not None:
        path = np.asarray(path)
        ax.plot(path[:, 0], path[:, 1], color="tab:red", lw=1, marker=".", ms=3)
    ax.scatter([xc[0]], [xc[1]], marker="*", s=200, c="tab:red", edgecolors="k",
               label=f"poison, y = {y_poison:+d}", zorder=5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_title(f"validation error {result.error_clean:.1%} -> {result.error_poisoned:.1%}",
                 fontsize="medium")
    ax.legend(fontsize="x-small", loc="lower right")
    return ax


class PoisonExplorer(Explorer):
    """Sliders for the poison point's coordinates and a label switch above :func:`plot_poisoning`.

    Build it with :func:`poison_explorer`. Attributes: ``x1``, ``x2`` (``FloatSlider`` in
    [0, 1]), ``label`` (``ToggleButtons``, -1 or +1); ``image`` (the PNG); ``figure``, ``ax``;
    ``result``: the :class:`PoisonedBoundary` last drawn.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
                 x_poison: np.ndarray, y_poison: int, C: float, figsize: tuple[float, float]) -> None:
        self.X, self.y, self.X_val, self.y_val, self.C = X, y, X_val, y_val, C
        self.x1 = widgets.FloatSlider(value=float(x_poison[0]), min=0.0, max=1.0, step=0.01,
                                      description="x1", continuous_update=False)
        self.x2 = widgets.FloatSlider(value=float(x_poison[1]), min=0.0, max=1.0, step=0.01,
                                      description="x2", continuous_update=False)
        self.label = widgets.ToggleButtons(options=[("-1", -1), ("+1", 1)], value=int(y_poison),
                                           description="label")
        figure = new_figure(figsize)
        self.ax = figure.subplots()
        self.result: PoisonedBoundary | None = None
        # the sliders side by side, the label switch below them
        super().__init__([self.x1, self.x2], figure, extra=[self.label])
        self.controls.append(self.label)
        self.label.observe(self.redraw, names="value")

    def draw(self) -> None:
        """Retrain with the widgets' poison point and redraw."""
        xc = np.array([self.x1.value, self.x2.value], dtype=float)
        yc = int(self.label.value)
        self.result = poisoned_boundary(self.X, self.y, self.X_val, self.y_val, xc, yc, C=self.C)
        self.ax.clear()
        plot_poisoning(self.ax, self.X, self.y, xc, yc, self.result)


def poison_explorer(X, y, X_val, y_val, *, x_poison=(0.5, 0.5), y_poison: int = -1, C: float = 10.0,
                    figsize: tuple[float, float] = (4.5, 4.5)) -> PoisonExplorer:
    """Move one poison point by hand and watch the SVM's boundary move.

    Args:
        X, y: 2-D training set (n, 2) in [0, 1]^2, labels in {-1, +1} (NumPy or torch).
        X_val, y_val: validation set (m, 2), labels in {-1, +1}.
        x_poison: the point's starting position in [0, 1]^2; y_poison: its label.
        C: the SVM's constant > 0 (mean-hinge primal).
        figsize: the picture's size in inches.

    Returns:
        A :class:`PoisonExplorer` (an ``ipywidgets.VBox``); display it in a notebook.

    Raises:
        ValueError: if the data are not 2-D, or as :func:`poisoned_boundary`.

    Examples:
        >>> X, y = np.array([[0.1, 0.1], [0.2, 0.3], [0.9, 0.9], [0.8, 0.7]]), np.array([-1.0, -1, 1, 1])
        >>> explorer = poison_explorer(X, y, X, y, x_poison=(0.9, 0.8), C=10.0)
        >>> explorer.x1.value = 0.5  # retrains and redraws
        >>> explorer.result.error_clean
        0.0
    """
    C = _checks.number(C, "C", gt=0)
    Xn = as_numpy(X, "X")
    xc = as_numpy(np.asarray(x_poison, dtype=float) if not hasattr(x_poison, "shape") else x_poison, "x_poison")
    if Xn.ndim != 2 or Xn.shape[1] != 2:
        raise ValueError(f"X must be 2-D points (n, 2), got {Xn.shape}")
    poisoned_boundary(X, y, X_val, y_val, xc, y_poison, C=C)  # checks the rest (two small SVMs)
    yn, Xv, yv = as_numpy(y, "y"), as_numpy(X_val, "X_val"), as_numpy(y_val, "y_val")
    return PoisonExplorer(Xn, yn, Xv, yv, x_poison=xc, y_poison=int(y_poison), C=C, figsize=figsize)
