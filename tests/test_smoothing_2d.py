"""course_lib.smoothing_2d: the toy classifier, CERTIFY on a grid and the Neyman-Pearson half-space.

References: a half-plane classifier smoothed is itself, with radius |w.x + b| / ||w|| (see
tests/test_smoothing.py); Monte Carlo for the half-space's probabilities.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import smoothing_2d as s2
from course_lib.smoothing import ABSTAIN, Smooth

pytestmark = pytest.mark.certify


class HalfPlane(nn.Module):
    """f(x) = [w.x + b > 0] on the plane; smoothed, it is itself, with radius |w.x + b| / ||w||."""

    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    b = -0.5

    def forward(self, x):
        z = x @ self.w.to(x.dtype) + self.b
        return torch.stack([torch.zeros_like(z), z], 1)


def test_toy_classifier_follows_its_rule():
    f = s2.toy_classifier(center=(0.5, 0.0), r=0.3)
    pts = torch.tensor([[0.5, 0.1], [0.1, 0.0], [-0.1, 0.0], [0.9, 0.0], [0.5, 0.31]])
    assert f(pts).argmax(1).tolist() == [0, 1, 2, 1, 1]
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        f(torch.zeros(3))


def test_smoothed_map_is_sound_and_matches_the_closed_form_on_a_half_plane():
    sigma = 0.4
    m = s2.smoothed_map(HalfPlane(), 2, sigma, resolution=21, n0=20, n=2000, alpha=0.001)
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
    f = s2.toy_classifier()
    m = s2.smoothed_map(f, 3, 0.3, resolution=5, n0=10, n=50, seed=4)
    points = torch.tensor([[x, y] for y in m.ys for x in m.xs], dtype=torch.float64)
    classes, radii = Smooth(f, 3, 0.3).certify_batch(points, 10, 50, 0.01, 20_000,
                                                      generator=torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(m.smoothed.flatten(), classes.numpy())
    np.testing.assert_array_equal(m.radius.flatten(), radii.numpy())


def test_large_noise_erases_the_small_disk():
    f = s2.toy_classifier(r=0.5)
    small = s2.smoothed_map(f, 3, 0.1, resolution=21, n=200)
    large = s2.smoothed_map(f, 3, 0.8, resolution=21, n=200)
    assert (small.smoothed == 0).sum() > 0
    # at the centre P(inside) = P(chi2_2 < (r / sigma)^2) = 1 - exp(-r^2 / (2 sigma^2)) < 1/2
    assert 1 - math.exp(-0.5 ** 2 / (2 * 0.8 ** 2)) < 0.5
    assert (large.smoothed == 0).sum() == 0


@pytest.mark.parametrize("p_a, delta_norm, sigma", [(0.9, 0.8, 0.5), (0.6, 0.1, 1.0), (0.99, 2.0, 0.7)])
def test_neyman_pearson_halfspace_matches_monte_carlo(p_a, delta_norm, sigma):
    beta, p_shifted = s2.neyman_pearson_halfspace(p_a, delta_norm, sigma)
    gen = torch.Generator().manual_seed(0)
    d = 5
    delta = torch.randn(d, generator=gen, dtype=torch.float64)
    delta *= delta_norm / delta.norm()
    noise = sigma * torch.randn(400_000, d, generator=gen, dtype=torch.float64)
    in_h = lambda z: (z @ delta <= beta).double().mean().item()  # x = 0
    tol = 4 * math.sqrt(0.25 / noise.shape[0])
    assert in_h(noise) == pytest.approx(p_a, abs=tol)
    assert in_h(delta + noise) == pytest.approx(p_shifted, abs=tol)
    with pytest.raises(ValueError, match="p_a"):
        s2.neyman_pearson_halfspace(1.0, 0.5, 1.0)


@pytest.mark.parametrize("kwargs, name", [
    ({"r": 0.0}, "r"), ({"r": True}, "r"), ({"center": (0.0,)}, "center"), ({"center": (0.0, "1")}, "center"),
])
def test_toy_classifier_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        s2.toy_classifier(**kwargs)
    with pytest.raises(ValueError, match=name):
        s2.ToyClassifier(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"resolution": 1}, "resolution"), ({"xlim": (1.0, -1.0)}, "xlim"), ({"ylim": (0.0,)}, "ylim"),
    ({"n0": 0}, "n0"), ({"n": 2.0}, "n"), ({"alpha": 1.5}, "alpha"), ({"batch_size": True}, "batch_size"),
    ({"seed": "0"}, "seed"), ({"num_classes": 1}, "num_classes"), ({"sigma": 0.0}, "sigma"),
])
def test_smoothed_map_rejects_bad_arguments(kwargs, name):
    args = {"base_classifier": s2.toy_classifier(), "num_classes": 3, "sigma": 0.25, "resolution": 3, "n": 10}
    with pytest.raises(ValueError, match=name):
        s2.smoothed_map(**{**args, **kwargs})


def test_neyman_pearson_halfspace_rejects_bad_arguments():
    for args, name in [((0.0, 0.5, 1.0), "p_a"), ((0.9, -0.5, 1.0), "delta_norm"), ((0.9, 0.5, 0.0), "sigma")]:
        with pytest.raises(ValueError, match=name):
            s2.neyman_pearson_halfspace(*args)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(s2).failed == 0


def _map(**kw):
    args = {"base_classifier": s2.toy_classifier(), "num_classes": 3, "sigma": 0.5, "resolution": 3, "n0": 5,
            "n": 20, "alpha": 0.125, "batch_size": 64}
    m = s2.smoothed_map(**{**args, **kw})
    return m.smoothed.tolist(), m.radius.tolist(), m.sigma, m.n0, m.n, m.alpha


POLICY = [
    (lambda v: s2.toy_classifier(r=v).r, "r", 0.5),
    (lambda v: s2.ToyClassifier(r=v).r, "r", 0.5),
    (lambda v: _map(num_classes=v), "num_classes", 3),
    (lambda v: _map(sigma=v), "sigma", 0.5),
    (lambda v: _map(resolution=v), "resolution", 3),
    (lambda v: _map(n0=v), "n0", 5),
    (lambda v: _map(n=v), "n", 20),
    (lambda v: _map(alpha=v), "alpha", 0.125),
    (lambda v: _map(batch_size=v), "batch_size", 64),
    (lambda v: s2.neyman_pearson_halfspace(v, 0.5, 1.0), "p_a", 0.75),
    (lambda v: s2.neyman_pearson_halfspace(0.75, v, 1.0), "delta_norm", 0.5),
    (lambda v: s2.neyman_pearson_halfspace(0.75, 0.5, v), "sigma", 0.5),
]


@pytest.mark.parametrize("call, name, value", POLICY, ids=[f"{i}-{c[1]}" for i, c in enumerate(POLICY)])
def test_argument_policy(call, name, value):
    from argument_policy import check_policy

    check_policy(call, name, value, lambda a, b: a == b)
