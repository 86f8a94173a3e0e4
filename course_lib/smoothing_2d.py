"""Randomized smoothing you can draw: the computations behind lecture 5's pictures.

:class:`ToyClassifier` (:func:`toy_classifier`) is a hand-made base classifier ``f`` on the
plane with three classes: a small disk (class 0) in the middle of two half-planes (classes
1 and 2), so that smoothing has something to erase. :func:`smoothed_map` runs CERTIFY
(:meth:`course_lib.smoothing.Smooth.certify_batch`) at every point of a grid and returns
the base class, the smoothed class (``ABSTAIN`` where it abstains) and the certified L2
radius. :func:`neyman_pearson_halfspace` gives the numbers of the worst case of the binary
certification theorem.

The pictures themselves (and the sigma slider) are in :mod:`course_lib.widgets.smoothing`.
Names follow :mod:`course_lib.smoothing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
from torch import Tensor, nn

from course_lib import _checks
from course_lib.smoothing import Smooth

__all__ = ["SmoothedMap", "ToyClassifier", "neyman_pearson_halfspace", "smoothed_map", "toy_classifier"]


class ToyClassifier(nn.Module):
    """Three classes on the plane: 0 inside the disk of radius ``r`` about ``center``, else
    1 where x >= 0 and 2 where x < 0. Logits are one-hot, so the argmax is the rule.

    Maps points (N, 2) to logits (N, 3), on the points' device and dtype.

    Examples:
        >>> f = ToyClassifier(center=(0.0, 0.0), r=0.5)
        >>> f(torch.tensor([[0.1, 0.1], [1.0, 0.0], [-1.0, 0.0]])).argmax(1).tolist()
        [0, 1, 2]
    """

    def __init__(self, center: Sequence[float] = (0.0, 0.0), r: float = 0.5) -> None:
        super().__init__()
        if len(center) != 2:
            raise _checks.fail("center", "two numbers (x, y)", center)
        self.center = tuple(_checks.number(c, "center") for c in center)
        self.r = _checks.number(r, "r", gt=0)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"ToyClassifier takes points of shape (N, 2), got {tuple(x.shape)}")
        center = torch.tensor(self.center, dtype=x.dtype, device=x.device)
        inside = (x - center).norm(dim=1) < self.r
        cls = torch.where(inside, 0, torch.where(x[:, 0] >= 0, 1, 2))
        return nn.functional.one_hot(cls, 3).to(x.dtype)


def toy_classifier(center: Sequence[float] = (0.0, 0.0), r: float = 0.5) -> ToyClassifier:
    """The three-class base classifier of the demo (see :class:`ToyClassifier`).

    Raises:
        ArgumentError (a ValueError): unless ``r > 0`` and ``center`` holds two numbers.
    """
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


def _limits(lim: Sequence[float], name: str) -> tuple[float, float]:
    if len(lim) != 2:
        raise _checks.fail(name, "(low, high) with low < high", lim)
    low, high = (_checks.number(v, name) for v in lim)
    if not low < high:
        raise _checks.fail(name, "(low, high) with low < high", lim)
    return low, high


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
        ArgumentError (a ValueError): for bad limits or resolution, and as :class:`Smooth`
            does for the rest.

    Examples:
        >>> m = smoothed_map(toy_classifier(), 3, sigma=0.25, resolution=5, n=100)
        >>> m.smoothed.shape, int(m.smoothed[2, 2])  # the centre of the disk stays class 0
        ((5, 5), 0)
    """
    xlim, ylim = _limits(xlim, "xlim"), _limits(ylim, "ylim")
    resolution = _checks.integer(resolution, "resolution", ge=2)
    n0, n, batch_size = (_checks.integer(v, name, ge=1) for name, v in
                         (("n0", n0), ("n", n), ("batch_size", batch_size)))
    alpha = _checks.probability(alpha, "alpha")
    seed = _checks.integer(seed, "seed")
    smooth = Smooth(base_classifier, num_classes, sigma, input_shape=(2,))
    xs = torch.linspace(xlim[0], xlim[1], resolution, dtype=torch.float64)
    ys = torch.linspace(ylim[0], ylim[1], resolution, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx.flatten(), gy.flatten()], 1)
    with torch.no_grad():
        base = base_classifier(points).argmax(1)
    classes, radii = smooth.certify_batch(points, n0, n, alpha, batch_size,
                                          generator=torch.Generator().manual_seed(seed))
    shape = (resolution, resolution)
    return SmoothedMap(xs.numpy(), ys.numpy(), base.view(shape).numpy(), classes.view(shape).numpy(),
                       radii.view(shape).numpy(), smooth.sigma, n0, n, alpha)


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

    Raises:
        ArgumentError (a ValueError): unless ``0 < p_a < 1``, ``delta_norm >= 0`` and ``sigma > 0``.

    Examples:
        >>> beta, p_shifted = neyman_pearson_halfspace(p_a=0.9, delta_norm=0.5, sigma=0.5)
        >>> round(p_shifted, 4)  # Phi(Phi^-1(0.9) - 1)
        0.6109
    """
    p_a = _checks.probability(p_a, "p_a")
    delta_norm = _checks.number(delta_norm, "delta_norm", ge=0)
    sigma = _checks.number(sigma, "sigma", gt=0)
    z = NormalDist().inv_cdf(p_a)
    return sigma * delta_norm * z, NormalDist().cdf(z - delta_norm / sigma)
