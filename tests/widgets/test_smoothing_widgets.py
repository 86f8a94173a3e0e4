"""course_lib.widgets.smoothing: the pictures and the sigma explorer (the computations: tests/test_smoothing_2d.py)."""

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from course_lib import smoothing_2d as s2
from course_lib.smoothing import ABSTAIN
from course_lib.widgets import smoothing as sw
from course_lib.widgets.explorer import Explorer

matplotlib.use("Agg")

pytestmark = pytest.mark.certify


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
def test_plot_neyman_pearson_titles_the_shifted_probability(p_a, delta_norm, sigma):
    _, p_shifted = sw.neyman_pearson_halfspace(p_a, delta_norm, sigma)
    ax = sw.plot_neyman_pearson(p_a, delta_norm, sigma, ax=Figure().subplots())
    assert f"= {p_shifted:.2f} of x + delta + noise" in ax.get_title()
    with pytest.raises(ValueError, match="p_a"):
        sw.plot_neyman_pearson(1.0, 0.5, 1.0, ax=Figure().subplots())


def test_the_computations_moved_to_the_library_are_importable_from_here():
    for name in ("ToyClassifier", "toy_classifier", "SmoothedMap", "smoothed_map", "neyman_pearson_halfspace"):
        assert getattr(sw, name) is getattr(s2, name)
    import course_lib as cl

    assert cl.smoothing_widgets.smoothed_map is s2.smoothed_map  # the old module name


def test_explorer_is_an_explorer():
    ex = sw.sigma_explorer(resolution=5, n=20, figsize=(4.0, 2.0))
    assert isinstance(ex, Explorer) and ex.controls == [ex.sigma]
    assert len(ex.axes) == 2 and ex.figure is ex.axes[0].figure
    assert ex.children[0] is ex.sigma and ex.children[-1] is ex.image


def test_docstring_examples():
    import doctest

    assert doctest.testmod(sw).failed == 0


POLICY = [
    (lambda v: sw.sigma_explorer(num_classes=v, resolution=3, n=10, figsize=(2.0, 1.0)).map.smoothed.tolist(),
     "num_classes", 3),
    (lambda v: sw.sigma_explorer(sigma=v, resolution=3, n=10, figsize=(2.0, 1.0)).map.smoothed.tolist(), "sigma", 0.5),
    (lambda v: sw.sigma_explorer(resolution=v, n=10, figsize=(2.0, 1.0)).map.smoothed.tolist(), "resolution", 3),
    (lambda v: sw.sigma_explorer(n0=v, resolution=3, n=10, figsize=(2.0, 1.0)).map.smoothed.tolist(), "n0", 5),
    (lambda v: sw.sigma_explorer(n=v, resolution=3, figsize=(2.0, 1.0)).map.smoothed.tolist(), "n", 10),
    (lambda v: sw.sigma_explorer(alpha=v, resolution=3, n=10, figsize=(2.0, 1.0)).map.smoothed.tolist(), "alpha", 0.125),
    (lambda v: sw.plot_neyman_pearson(v, 0.5, ax=Figure().subplots()).get_title(), "p_a", 0.75),
    (lambda v: sw.plot_neyman_pearson(0.75, v, ax=Figure().subplots()).get_title(), "delta_norm", 0.5),
    (lambda v: sw.plot_neyman_pearson(0.75, 0.5, v, ax=Figure().subplots()).get_title(), "sigma", 0.5),
    (lambda v: [a.get_title() for a in sw.plot_smoothed_map(
        sw.smoothed_map(sw.toy_classifier(), 3, 0.25, resolution=3, n0=5, n=10), v,
        axes=Figure().subplots(1, 2))], "num_classes", 3),
]


@pytest.mark.parametrize("call, name, value", POLICY, ids=[f"{i}-{c[1]}" for i, c in enumerate(POLICY)])
def test_argument_policy(call, name, value):
    from argument_policy import check_policy

    check_policy(call, name, value, lambda a, b: a == b)
