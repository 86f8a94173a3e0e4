"""Pictures of randomized smoothing and a sigma slider over a smoothed 2-D classifier (lecture 5).

:func:`plot_neyman_pearson` draws the worst case of the binary certification theorem: two
Gaussians, ``N(x, sigma^2 I)`` and ``N(x + delta, sigma^2 I)``, and the half-space that holds
``p_A`` of the first (:func:`course_lib.smoothing_2d.neyman_pearson_halfspace` gives its numbers).

:func:`plot_smoothed_map` draws what :func:`course_lib.smoothing_2d.smoothed_map` computes
(CERTIFY at every point of a grid, here of :func:`~course_lib.smoothing_2d.toy_classifier`,
a small disk between two half-planes): the base and the smoothed classes side by side.
:func:`sigma_explorer` puts a sigma slider above that picture: as sigma grows, the smoothed
classifier forgets the small disk (its class never wins half of the noise), abstains along
the boundaries, and certifies larger radii far from them.

The computations live in :mod:`course_lib.smoothing_2d` and are importable from here too
(``toy_classifier``, ``ToyClassifier``, ``smoothed_map``, ``SmoothedMap``,
``neyman_pearson_halfspace``). As in :mod:`course_lib.widgets`, the picture is a matplotlib
``Figure`` outside pyplot shown through an ``ipywidgets.Image``.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import ipywidgets as widgets
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from torch import nn

from course_lib import _checks
from course_lib.smoothing import ABSTAIN
from course_lib.smoothing_2d import (SmoothedMap, ToyClassifier, neyman_pearson_halfspace, smoothed_map,
                                     toy_classifier)
from course_lib.widgets.explorer import Explorer, new_figure

__all__ = ["SigmaExplorer", "SmoothedMap", "ToyClassifier", "neyman_pearson_halfspace", "plot_neyman_pearson",
           "plot_smoothed_map", "sigma_explorer", "smoothed_map", "toy_classifier"]

CLASS_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")
ABSTAIN_COLOR = "#bbbbbb"


def _regions(ax: Axes, m: SmoothedMap, classes: np.ndarray, num_classes: int) -> None:
    colors = [ABSTAIN_COLOR, *[CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(num_classes)]]
    ax.imshow(classes + 1, origin="lower", cmap=ListedColormap(colors), vmin=0, vmax=num_classes,
              extent=(m.xs[0], m.xs[-1], m.ys[0], m.ys[-1]), interpolation="nearest", alpha=0.8)
    ax.set_aspect("equal")


def plot_smoothed_map(m: SmoothedMap, num_classes: int, *, axes: Sequence[Axes] | None = None,
                      figsize: tuple[float, float] = (9.0, 4.2)) -> Sequence[Axes]:
    """Left: the base classifier's regions. Right: the smoothed classifier's certified regions
    (grey: abstain) with contours of the certified radius.

    Args:
        m: the output of :func:`smoothed_map`.
        num_classes: K, for the colours.
        axes: two Axes to draw on; default a new figure.
        figsize: size of the new figure.

    Returns:
        The two Axes; their titles carry sigma, the abstention rate and the largest radius.
    """
    num_classes = _checks.integer(num_classes, "num_classes", ge=2)
    if axes is None:
        import matplotlib.pyplot as plt  # only when the caller gave no Axes

        _, axes = plt.subplots(1, 2, figsize=figsize)
    if len(axes) != 2:
        raise ValueError(f"axes must be two Axes, got {len(axes)}")
    left, right = axes
    _regions(left, m, m.base, num_classes)
    left.set_title("base classifier f", fontsize="medium")
    _regions(right, m, m.smoothed, num_classes)
    if m.radius.max() > 0:
        levels = [r for r in (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0) if r < m.radius.max()]
        if levels:
            cs = right.contour(m.xs, m.ys, m.radius, levels=levels, colors="black", linewidths=0.6)
            right.clabel(cs, fontsize="x-small", fmt="%g")
    abstain = float((m.smoothed == ABSTAIN).mean())
    right.set_title(f"smoothed g, sigma = {m.sigma:.2f}: abstains on {abstain:.0%}\n"
                    f"radius contours; at most {m.max_radius:.2f} with n = {m.n}", fontsize="medium")
    return axes


class SigmaExplorer(Explorer):
    """A sigma slider above :func:`plot_smoothed_map`'s picture. Build it with :func:`sigma_explorer`.

    Attributes: ``sigma`` (the ``FloatSlider``; set ``.value`` to move it from code),
    ``image`` (the ``ipywidgets.Image``), ``figure``, ``axes``, and ``map``, the
    :class:`SmoothedMap` last drawn; ``controls`` is ``[sigma]`` (see :class:`Explorer`).
    """

    def __init__(self, base_classifier: nn.Module, num_classes: int, *, sigma: float,
                 sigma_range: tuple[float, float], settings: dict, figsize: tuple[float, float]) -> None:
        self.base_classifier, self.num_classes, self.settings = base_classifier, num_classes, settings
        self.sigma = widgets.FloatSlider(value=sigma, min=sigma_range[0], max=sigma_range[1],
                                         step=(sigma_range[1] - sigma_range[0]) / 40, description="sigma",
                                         continuous_update=False, readout_format=".2f")
        figure = new_figure(figsize)
        self.axes = figure.subplots(1, 2)
        super().__init__([self.sigma], figure)

    def draw(self) -> None:
        """Recompute the map at the slider's sigma and draw it."""
        self.map = smoothed_map(self.base_classifier, self.num_classes, float(self.sigma.value), **self.settings)
        for ax in self.axes:
            ax.clear()
        plot_smoothed_map(self.map, self.num_classes, axes=self.axes)


def sigma_explorer(base_classifier: nn.Module | None = None, num_classes: int = 3, *, sigma: float = 0.25,
                   sigma_range: tuple[float, float] = (0.05, 1.0), resolution: int = 41, n0: int = 20,
                   n: int = 200, alpha: float = 0.01, seed: int = 0,
                   xlim: Sequence[float] = (-2.0, 2.0), ylim: Sequence[float] = (-2.0, 2.0),
                   figsize: tuple[float, float] = (9.0, 4.2)) -> SigmaExplorer:
    """A sigma slider over the base and smoothed decision regions of a 2-D classifier.

    Args:
        base_classifier: maps points (N, 2) to logits (N, num_classes); default :func:`toy_classifier`.
        num_classes: K >= 2.
        sigma: initial noise level, inside ``sigma_range``.
        sigma_range: ``(low, high)`` of the slider, 0 < low < high.
        resolution, n0, n, alpha, seed, xlim, ylim: as in :func:`smoothed_map`.
        figsize: the picture's size in inches.

    Returns:
        A :class:`SigmaExplorer` (an ``ipywidgets.VBox``); display it in a notebook.

    Raises:
        ArgumentError (a ValueError): if ``sigma_range`` is not ``0 < low < high`` or ``sigma``
            lies outside it, and as :func:`smoothed_map` does for the rest.

    Examples:
        >>> explorer = sigma_explorer(sigma=0.25, resolution=9, n=50)  # display it in a notebook
        >>> explorer.sigma.value = 0.8  # moves the slider and redraws
        >>> explorer.map.sigma
        0.8
    """
    num_classes = _checks.integer(num_classes, "num_classes", ge=2)
    if len(sigma_range) != 2:
        raise _checks.fail("sigma_range", "(low, high) with 0 < low < high", sigma_range)
    low, high = (_checks.number(v, "sigma_range", gt=0) for v in sigma_range)
    if not low < high:
        raise _checks.fail("sigma_range", "(low, high) with 0 < low < high", sigma_range)
    sigma = _checks.number(sigma, "sigma", ge=low, le=high)
    base = toy_classifier() if base_classifier is None else base_classifier
    settings = dict(xlim=tuple(xlim), ylim=tuple(ylim), resolution=resolution, n0=n0, n=n, alpha=alpha, seed=seed)
    smoothed_map(base, num_classes, sigma, **{**settings, "resolution": 2})  # fail early on bad settings
    return SigmaExplorer(base, num_classes, sigma=sigma, sigma_range=(low, high), settings=settings, figsize=figsize)


def plot_neyman_pearson(p_a: float, delta_norm: float, sigma: float = 1.0, *, ax: Axes | None = None,
                        figsize: tuple[float, float] = (6.0, 4.5)) -> Axes:
    """Two Gaussians, ``N(x, sigma^2 I)`` and ``N(x + delta, sigma^2 I)`` in the plane (x = 0,
    delta along the first axis), and the half-space ``H`` of the binary theorem shaded: it holds
    ``p_a`` of the first; the title gives what it holds of the second.

    Args:
        p_a: probability of class A under the noise at x, in (0, 1).
        delta_norm: length of the shift, >= 0.
        sigma: noise standard deviation, > 0.
        ax: the Axes to draw on; default a new figure.
        figsize: size of the new figure.

    Returns:
        The Axes.
    """
    beta, p_shifted = neyman_pearson_halfspace(p_a, delta_norm, sigma)  # checks the three
    p_a, delta_norm, sigma = float(p_a), float(delta_norm), float(sigma)
    if ax is None:
        import matplotlib.pyplot as plt  # only when the caller gave no Axes

        _, ax = plt.subplots(figsize=figsize)
    lim = 3.2 * sigma + delta_norm
    g = np.linspace(-3.2 * sigma, lim, 200)
    gx, gy = np.meshgrid(g, np.linspace(-3.2 * sigma, 3.2 * sigma, 160))
    for centre, color, name in ((0.0, "tab:blue", "x + noise"), (delta_norm, "tab:red", "x + delta + noise")):
        density = np.exp(-((gx - centre) ** 2 + gy ** 2) / (2 * sigma ** 2))
        ax.contour(gx, gy, density, levels=[0.05, 0.3, 0.7], colors=color, linewidths=1)
        ax.plot([centre], [0], "o", color=color, label=name)
    # H = {z : delta.(z - x) <= beta} = {z_1 <= beta / ||delta||} with delta along the first axis
    edge = beta / delta_norm if delta_norm > 0 else sigma * NormalDist().inv_cdf(p_a)
    ax.axvspan(g[0], edge, color="tab:blue", alpha=0.12, label=f"H: holds p_A = {p_a:.2f} of x + noise")
    ax.axvline(edge, color="tab:blue", linestyle="--", linewidth=1)
    ax.annotate("", xy=(delta_norm, -2.6 * sigma), xytext=(0, -2.6 * sigma),
                arrowprops=dict(arrowstyle="->", color="black"))
    ax.text(delta_norm / 2, -2.45 * sigma, "delta", ha="center", fontsize="small")
    ax.set_aspect("equal")
    ax.set_xlim(g[0], g[-1])
    ax.legend(loc="upper right", fontsize="x-small")
    ax.set_title(f"||delta|| = {delta_norm:.2f}, sigma = {sigma:.2f}: the half-space H holds\n"
                 f"Phi(Phi^-1(p_A) - ||delta|| / sigma) = {p_shifted:.2f} of x + delta + noise", fontsize="small")
    return ax
