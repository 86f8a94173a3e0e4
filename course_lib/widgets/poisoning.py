"""Pictures of SVM poisoning in 2-D, and a widget to move the poison point by hand (lecture 6).

:func:`poisoned_boundary` (pure computation) retrains the SVM with one poison point and
reports the boundary before and after and the validation error of each.
:func:`loss_surface` evaluates the attacker's objective, the validation hinge loss of the
retrained SVM, on a grid of poison positions (Biggio et al. 2012, Fig. 1).
:func:`plot_poisoning` draws the data, both boundaries, the poison point and, optionally,
the attack's path over the loss surface.
:func:`poison_explorer`: two sliders for the poison point's coordinates and a label switch
above that picture; as in :mod:`course_lib.widgets`, the picture is a matplotlib ``Figure``
outside pyplot shown through an ``ipywidgets.Image``.

Names follow :mod:`course_lib.poisoning`: ``w, b`` the SVM, ``C`` its constant (mean-hinge
primal), ``x_poison, y_poison`` the poison point and its label in {-1, +1}.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from course_lib import poisoning
from course_lib.widgets.explorer import png_bytes


@dataclass(frozen=True)
class PoisonedBoundary:
    """An SVM trained without and with one poison point (NumPy float64).

    Attributes:
        w_clean, b_clean: trained on (X, y) alone.
        w_poisoned, b_poisoned: trained on (X, y) plus (x_poison, y_poison).
        error_clean, error_poisoned: validation error of each (fraction in [0, 1]).
        loss_clean, loss_poisoned: validation mean hinge loss of each.
    """

    w_clean: np.ndarray
    b_clean: float
    w_poisoned: np.ndarray
    b_poisoned: float
    error_clean: float
    error_poisoned: float
    loss_clean: float
    loss_poisoned: float


def _np(a) -> np.ndarray:
    return poisoning._as_numpy(a, "array")


def poisoned_boundary(X, y, X_val, y_val, x_poison, y_poison: int, *, C: float) -> PoisonedBoundary:
    """The SVM before and after adding ``(x_poison, y_poison)`` to the training set.

    Args:
        X, y: training set (n, d), (n,) in {-1, +1}; NumPy or torch.
        X_val, y_val: validation set (m, d), (m,) in {-1, +1}.
        x_poison: (d,) in [0, 1]^d; y_poison: -1 or +1.
        C: the SVM's constant > 0, applied to each training set as given (the clean SVM
            with C on n points, the poisoned one with C on n + 1).

    Returns:
        A :class:`PoisonedBoundary`.

    Raises:
        ValueError: as :func:`course_lib.poisoning.poison_gradient`.
    """
    Xtr, ytr, Xv, yv, xc, yc, C, _ = poisoning._check_attack(X, y, X_val, y_val, x_poison, y_poison,
                                                             C, poisoning.DEFAULT_TOL)
    w0, b0 = poisoning.train_svm(Xtr, ytr, C)
    w1, b1 = poisoning.train_svm(np.vstack([Xtr, xc]), np.append(ytr, yc), C)
    return PoisonedBoundary(w0, b0, w1, b1,
                            poisoning.classification_error(w0, b0, Xv, yv),
                            poisoning.classification_error(w1, b1, Xv, yv),
                            poisoning.hinge_loss(w0, b0, Xv, yv), poisoning.hinge_loss(w1, b1, Xv, yv))


@poisoning._one_blas_thread
def loss_surface(X, y, X_val, y_val, y_poison: int, *, C: float, resolution: int = 25
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation hinge loss of the SVM retrained with a poison point at each node of a grid.

    Args:
        X, y, X_val, y_val: 2-D training and validation sets, labels in {-1, +1}.
        y_poison: the poison point's label.
        C: the SVM's constant > 0 (on the n + 1 points).
        resolution: grid nodes per axis over [0, 1], >= 2.

    Returns:
        ``(g1, g2, loss)``: the node coordinates (resolution,) each and the losses
        (resolution, resolution), ``loss[i, j]`` at ``x_poison = (g1[j], g2[i])``
        (the layout ``contourf(g1, g2, loss)`` expects).

    Raises:
        ValueError: if the data are not 2-D, resolution < 2, or as :func:`poisoned_boundary`.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    Xtr, ytr, Xv, yv, _, yc, C, _ = poisoning._check_attack(X, y, X_val, y_val, np.full(2, 0.5),
                                                            y_poison, C, poisoning.DEFAULT_TOL)
    if Xtr.shape[1] != 2:
        raise ValueError(f"X must be 2-D points (n, 2), got {Xtr.shape}")
    g = np.linspace(0.0, 1.0, resolution)
    loss = np.empty((resolution, resolution))
    y_all = np.append(ytr, yc)
    alpha = None
    for i, x2 in enumerate(g):
        for j, x1 in enumerate(g if i % 2 == 0 else g[::-1]):  # snake: warm starts stay close
            sol = poisoning._fit(np.vstack([Xtr, [x1, x2]]), y_all, C, poisoning.DEFAULT_TOL, alpha)
            alpha = sol.alpha
            loss[i, j if i % 2 == 0 else resolution - 1 - j] = poisoning.hinge_loss(sol.w, sol.b, Xv, yv)
    return g, g.copy(), loss


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
    Xn, yn, xc = _np(X), _np(y), _np(x_poison)
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


class PoisonExplorer(widgets.VBox):
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
        self.figure = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(self.figure)
        self.ax = self.figure.subplots()
        self.image = widgets.Image(format="png")
        self.result: PoisonedBoundary | None = None
        super().__init__([widgets.HBox([self.x1, self.x2]), self.label, self.image])
        for w in (self.x1, self.x2, self.label):
            w.observe(self.redraw, names="value")
        self.redraw()

    def redraw(self, change: dict | None = None) -> None:
        """Retrain with the widgets' poison point and redraw; the widgets' callback."""
        xc = np.array([self.x1.value, self.x2.value], dtype=float)
        yc = int(self.label.value)
        self.result = poisoned_boundary(self.X, self.y, self.X_val, self.y_val, xc, yc, C=self.C)
        self.ax.clear()
        plot_poisoning(self.ax, self.X, self.y, xc, yc, self.result)
        self.image.value = png_bytes(self.figure)


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
    """
    xc = _np(np.asarray(x_poison, dtype=float) if not hasattr(x_poison, "shape") else x_poison)
    Xtr, ytr, Xv, yv, xc, yc, C, _ = poisoning._check_attack(X, y, X_val, y_val, xc, y_poison, C,
                                                             poisoning.DEFAULT_TOL)
    if Xtr.shape[1] != 2:
        raise ValueError(f"X must be 2-D points (n, 2), got {Xtr.shape}")
    return PoisonExplorer(Xtr, ytr, Xv, yv, x_poison=xc, y_poison=int(yc), C=C, figsize=figsize)
