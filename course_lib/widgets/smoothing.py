"""Pictures of randomized smoothing and a sigma slider over a smoothed 2-D classifier (lecture 5).

:func:`plot_neyman_pearson` draws the worst case of the binary certification theorem: two
Gaussians, ``N(x, sigma^2 I)`` and ``N(x + delta, sigma^2 I)``, and the half-space that holds
``p_A`` of the first (:func:`neyman_pearson_halfspace` gives its numbers).

:func:`toy_classifier` is a hand-made base classifier ``f`` on the plane with three classes:
a small disk (class 0) in the middle of two half-planes (classes 1 and 2), so that smoothing
has something to erase. :func:`smoothed_map` runs CERTIFY (:class:`course_lib.smoothing.Smooth`)
at every point of a grid and returns the base class, the smoothed class (``-1`` where it
abstains) and the certified L2 radius; :func:`plot_smoothed_map` draws them side by side.
:func:`sigma_explorer` puts a sigma slider above that picture: as sigma grows, the smoothed
classifier forgets the small disk (its class never wins half of the noise), abstains along
the boundaries, and certifies larger radii far from them.

As in :mod:`course_lib.widgets`, the picture is a matplotlib ``Figure`` outside pyplot shown
through an ``ipywidgets.Image``. Names follow :mod:`course_lib.smoothing`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor, nn

from course_lib.smoothing import ABSTAIN, Smooth
from course_lib.widgets.explorer import png_bytes

CLASS_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")
ABSTAIN_COLOR = "#bbbbbb"


class ToyClassifier(nn.Module):
    """Three classes on the plane: 0 inside the disk of radius ``r`` about ``center``, else
    1 where x >= 0 and 2 where x < 0. Logits are one-hot, so the argmax is the rule.

    Maps points (N, 2) to logits (N, 3), on the points' device and dtype.
    """

    def __init__(self, center: Sequence[float] = (0.0, 0.0), r: float = 0.5) -> None:
        super().__init__()
        self.center = tuple(float(c) for c in center)
        self.r = float(r)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"ToyClassifier takes points of shape (N, 2), got {tuple(x.shape)}")
        center = torch.tensor(self.center, dtype=x.dtype, device=x.device)
        inside = (x - center).norm(dim=1) < self.r
        cls = torch.where(inside, 0, torch.where(x[:, 0] >= 0, 1, 2))
        return nn.functional.one_hot(cls, 3).to(x.dtype)


def toy_classifier(center: Sequence[float] = (0.0, 0.0), r: float = 0.5) -> ToyClassifier:
    """The three-class base classifier of the demo (see :class:`ToyClassifier`)."""
    if not r > 0:
        raise ValueError(f"r must be > 0, got {r!r}")
    return ToyClassifier(center, r)


@dataclass(frozen=True)
class SmoothedMap:
    """CERTIFY on a grid. Arrays are (R, R) NumPy, rows along y, columns along x.

    Attributes:
        xs, ys: the grid's coordinates, (R,) each.
        base: the base classifier's class at each grid point.
        smoothed: the smoothed classifier's certified class, ``-1`` where it abstains.
        radius: the certified L2 radius (0 where it abstains).
        sigma, n0, n, alpha: the settings used.
    """

    xs: np.ndarray
    ys: np.ndarray
    base: np.ndarray
    smoothed: np.ndarray
    radius: np.ndarray
    sigma: float
    n0: int
    n: int
    alpha: float

    @property
    def max_radius(self) -> float:
        """The largest radius ``n`` samples can certify: ``sigma * Phi^-1(alpha ** (1 / n))``."""
        p = self.alpha ** (1 / self.n)
        return self.sigma * NormalDist().inv_cdf(p) if p > 0.5 else 0.0


def smoothed_map(base_classifier: nn.Module, num_classes: int, sigma: float, *,
                 xlim: Sequence[float] = (-2.0, 2.0), ylim: Sequence[float] = (-2.0, 2.0),
                 resolution: int = 41, n0: int = 20, n: int = 200, alpha: float = 0.01,
                 batch_size: int = 20_000, seed: int = 0) -> SmoothedMap:
    """Base class, smoothed class and certified radius at every point of a grid of the plane.

    Args:
        base_classifier: maps points (N, 2) to logits (N, num_classes).
        num_classes: K >= 2.
        sigma: noise standard deviation, > 0.
        xlim, ylim: ``(low, high)`` of the grid, low < high.
        resolution: R >= 2 points per axis.
        n0, n, alpha, batch_size: CERTIFY's settings (:meth:`Smooth.certify_batch`).
        seed: seeds the noise (a CPU generator; the grid lives on the CPU).

    Returns:
        A :class:`SmoothedMap`.

    Raises:
        ValueError: for bad limits or resolution, and as :class:`Smooth` does for the rest.
    """
    for name, lim in (("xlim", xlim), ("ylim", ylim)):
        if len(lim) != 2 or not lim[0] < lim[1]:
            raise ValueError(f"{name} must be (low, high) with low < high, got {lim!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    smooth = Smooth(base_classifier, num_classes, sigma, input_shape=(2,))
    xs = torch.linspace(float(xlim[0]), float(xlim[1]), resolution, dtype=torch.float64)
    ys = torch.linspace(float(ylim[0]), float(ylim[1]), resolution, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx.flatten(), gy.flatten()], 1)
    with torch.no_grad():
        base = base_classifier(points).argmax(1)
    classes, radii = smooth.certify_batch(points, n0, n, alpha, batch_size,
                                          generator=torch.Generator().manual_seed(seed))
    shape = (resolution, resolution)
    return SmoothedMap(xs.numpy(), ys.numpy(), base.view(shape).numpy(), classes.view(shape).numpy(),
                       radii.view(shape).numpy(), float(sigma), n0, n, float(alpha))


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


class SigmaExplorer(widgets.VBox):
    """A sigma slider above :func:`plot_smoothed_map`'s picture. Build it with :func:`sigma_explorer`.

    Attributes: ``sigma`` (the ``FloatSlider``; set ``.value`` to move it from code),
    ``image`` (the ``ipywidgets.Image``), ``figure``, ``axes``, and ``map``, the
    :class:`SmoothedMap` last drawn.
    """

    def __init__(self, base_classifier: nn.Module, num_classes: int, *, sigma: float,
                 sigma_range: tuple[float, float], settings: dict, figsize: tuple[float, float]) -> None:
        self.base_classifier, self.num_classes, self.settings = base_classifier, num_classes, settings
        self.sigma = widgets.FloatSlider(value=sigma, min=sigma_range[0], max=sigma_range[1],
                                         step=(sigma_range[1] - sigma_range[0]) / 40, description="sigma",
                                         continuous_update=False, readout_format=".2f")
        self.figure = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(self.figure)
        self.axes = self.figure.subplots(1, 2)
        self.image = widgets.Image(format="png")
        super().__init__([self.sigma, self.image])
        self.sigma.observe(self.redraw, names="value")
        self.redraw()

    def redraw(self, change: dict | None = None) -> None:
        """Recompute the map at the slider's sigma and redraw; the slider's callback."""
        self.map = smoothed_map(self.base_classifier, self.num_classes, float(self.sigma.value), **self.settings)
        for ax in self.axes:
            ax.clear()
        plot_smoothed_map(self.map, self.num_classes, axes=self.axes)
        self.image.value = png_bytes(self.figure)


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
        ValueError: if ``sigma_range`` is not ``0 < low < high`` or ``sigma`` lies outside it,
            and as :func:`smoothed_map` does for the rest.
    """
    if len(sigma_range) != 2 or not 0 < sigma_range[0] < sigma_range[1] < math.inf:
        raise ValueError(f"sigma_range must be (low, high) with 0 < low < high, got {sigma_range!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma_range[0] <= sigma <= sigma_range[1]:
        raise ValueError(f"sigma must be a number in sigma_range={tuple(sigma_range)}, got {sigma!r}")
    base = toy_classifier() if base_classifier is None else base_classifier
    settings = dict(xlim=tuple(xlim), ylim=tuple(ylim), resolution=resolution, n0=n0, n=n, alpha=alpha, seed=seed)
    smoothed_map(base, num_classes, float(sigma), **{**settings, "resolution": 2})  # fail early on bad settings
    return SigmaExplorer(base, num_classes, sigma=float(sigma), sigma_range=tuple(sigma_range),
                         settings=settings, figsize=figsize)


def neyman_pearson_halfspace(p_a: float, delta_norm: float, sigma: float) -> tuple[float, float]:
    """The worst case of the binary theorem in numbers: the half-space ``H = {z : delta.(z - x) <= beta}``
    that holds ``p_a`` of ``N(x, sigma^2 I)`` holds ``Phi(Phi^-1(p_a) - ||delta|| / sigma)`` of
    ``N(x + delta, sigma^2 I)``.

    Args:
        p_a: the probability of class A at x, in (0, 1).
        delta_norm: ``||delta||_2 >= 0``.
        sigma: noise standard deviation, > 0.

    Returns:
        ``(beta, p_shifted)``: the offset ``beta = sigma ||delta|| Phi^-1(p_a)`` of the half-space
        and its probability under the shifted Gaussian.
    """
    if not 0 < p_a < 1:
        raise ValueError(f"p_a must be in (0, 1), got {p_a!r}")
    if not delta_norm >= 0 or not sigma > 0:
        raise ValueError(f"need delta_norm >= 0 and sigma > 0, got delta_norm={delta_norm!r}, sigma={sigma!r}")
    z = NormalDist().inv_cdf(p_a)
    return sigma * delta_norm * z, NormalDist().cdf(z - delta_norm / sigma)


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
    beta, p_shifted = neyman_pearson_halfspace(p_a, delta_norm, sigma)
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
