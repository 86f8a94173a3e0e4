import math
from statistics import NormalDist

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from course_lib.widgets import smoothing as sw
from course_lib.smoothing import ABSTAIN, Smooth

matplotlib.use("Agg")

pytestmark = pytest.mark.certify


class HalfPlane(nn.Module):
    """f(x) = [w.x + b > 0] on the plane; smoothed, it is itself, with radius |w.x + b| / ||w||."""

    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    b = -0.5

    def forward(self, x):
        z = x @ self.w.to(x.dtype) + self.b
        return torch.stack([torch.zeros_like(z), z], 1)


def test_toy_classifier_follows_its_rule():
    f = sw.toy_classifier(center=(0.5, 0.0), r=0.3)
    pts = torch.tensor([[0.5, 0.1], [0.1, 0.0], [-0.1, 0.0], [0.9, 0.0], [0.5, 0.31]])
    assert f(pts).argmax(1).tolist() == [0, 1, 2, 1, 1]
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        f(torch.zeros(3))


def test_smoothed_map_is_sound_and_matches_the_closed_form_on_a_half_plane():
    sigma = 0.4
    m = sw.smoothed_map(HalfPlane(), 2, sigma, resolution=21, n0=20, n=2000, alpha=0.001)
    gx, gy = np.meshgrid(m.xs, m.ys)
    z = gx * 1.0 + gy * 2.0 - 0.5
    distance = np.abs(z) / math.sqrt(5)
    np.testing.assert_array_equal(m.base, (z > 0).astype(int))
    certified = m.smoothed != ABSTAIN
    assert (m.smoothed[certified] == m.base[certified]).all()
    assert (m.radius[certified] <= distance[certified]).all()  # each fails w.p. <= 0.001; seeded
    assert (m.radius[~certified] == 0).all()
    far = distance > 0.6 * sigma
    assert certified[far].all()
    # where p_A is well inside (1/2, 1 - 1e-3) the radius is close to the truth
    p_a = np.vectorize(lambda d: NormalDist().cdf(d / sigma))(distance)
    mid = (p_a > 0.8) & (p_a < 0.99)
    assert mid.sum() > 20 and np.median(m.radius[mid] / distance[mid]) > 0.85
    assert m.radius.max() <= m.max_radius + 1e-12
    assert m.max_radius == pytest.approx(sigma * NormalDist().inv_cdf(0.001 ** (1 / 2000)))


def test_smoothed_map_is_certify_batch_on_the_grid():
    f = sw.toy_classifier()
    m = sw.smoothed_map(f, 3, 0.3, resolution=5, n0=10, n=50, seed=4)
    points = torch.tensor([[x, y] for y in m.ys for x in m.xs], dtype=torch.float64)
    classes, radii = Smooth(f, 3, 0.3).certify_batch(points, 10, 50, 0.01, 20_000,
                                                      generator=torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(m.smoothed.flatten(), classes.numpy())
    np.testing.assert_array_equal(m.radius.flatten(), radii.numpy())


def test_large_noise_erases_the_small_disk():
    f = sw.toy_classifier(r=0.5)
    small = sw.smoothed_map(f, 3, 0.1, resolution=21, n=200)
    large = sw.smoothed_map(f, 3, 0.8, resolution=21, n=200)
    assert (small.smoothed == 0).sum() > 0
    # at the centre P(inside) = P(chi2_2 < (r / sigma)^2) = 1 - exp(-r^2 / (2 sigma^2)) < 1/2
    assert 1 - math.exp(-0.5 ** 2 / (2 * 0.8 ** 2)) < 0.5
    assert (large.smoothed == 0).sum() == 0


def test_plot_titles_and_bad_axes():
    m = sw.smoothed_map(sw.toy_classifier(), 3, 0.25, resolution=11, n=100)
    axes = Figure().subplots(1, 2)
    sw.plot_smoothed_map(m, 3, axes=axes)
    abstain = (m.smoothed == ABSTAIN).mean()
    assert f"sigma = 0.25: abstains on {abstain:.0%}" in axes[1].get_title()
    assert f"at most {m.max_radius:.2f} with n = 100" in axes[1].get_title()
    with pytest.raises(ValueError, match="two Axes"):
        sw.plot_smoothed_map(m, 3, axes=[axes[0]])


def test_explorer_builds_and_redraws_on_the_slider():
    ex = sw.sigma_explorer(resolution=9, n=50)
    assert bytes(ex.image.value[:8]) == b"\x89PNG\r\n\x1a\n"
    assert ex.map.sigma == 0.25
    before = bytes(ex.image.value)
    ex.sigma.value = 0.8
    assert ex.map.sigma == pytest.approx(0.8)
    assert bytes(ex.image.value) != before
    expected = sw.smoothed_map(sw.toy_classifier(), 3, 0.8, resolution=9, n=50)
    np.testing.assert_array_equal(ex.map.smoothed, expected.smoothed)


@pytest.mark.parametrize("kwargs, name", [
    ({"sigma": 2.0}, "sigma"), ({"sigma_range": (0.0, 1.0)}, "sigma_range"),
    ({"resolution": 1}, "resolution"), ({"xlim": (1.0, -1.0)}, "xlim"), ({"n": 0}, "n"),
    ({"alpha": 1.5}, "alpha"), ({"num_classes": 1}, "num_classes"),
])
def test_bad_settings_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sw.sigma_explorer(**kwargs)


@pytest.mark.parametrize("p_a, delta_norm, sigma", [(0.9, 0.8, 0.5), (0.6, 0.1, 1.0), (0.99, 2.0, 0.7)])
def test_neyman_pearson_halfspace_matches_monte_carlo(p_a, delta_norm, sigma):
    beta, p_shifted = sw.neyman_pearson_halfspace(p_a, delta_norm, sigma)
    gen = torch.Generator().manual_seed(0)
    d = 5
    delta = torch.randn(d, generator=gen, dtype=torch.float64)
    delta *= delta_norm / delta.norm()
    noise = sigma * torch.randn(400_000, d, generator=gen, dtype=torch.float64)
    in_h = lambda z: (z @ delta <= beta).double().mean().item()  # x = 0
    tol = 4 * math.sqrt(0.25 / noise.shape[0])
    assert in_h(noise) == pytest.approx(p_a, abs=tol)
    assert in_h(delta + noise) == pytest.approx(p_shifted, abs=tol)
    ax = sw.plot_neyman_pearson(p_a, delta_norm, sigma, ax=Figure().subplots())
    assert f"= {p_shifted:.2f} of x + delta + noise" in ax.get_title()
    with pytest.raises(ValueError, match="p_a"):
        sw.neyman_pearson_halfspace(1.0, 0.5, 1.0)
