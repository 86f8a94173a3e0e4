import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from course_lib import ibp
from course_lib.widgets import ibp as ibp_widgets

pytestmark = pytest.mark.certify


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    x[0] = 0.0  # on the box's face: the input box is clipped
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_widths_are_the_mean_widths_of_the_layer_bounds(setup):
    model, x, _ = setup
    widths = ibp_widgets.layer_widths(model, x, 0.1)
    with torch.no_grad():
        bounds = ibp.ibp_layer_bounds(model, x, 0.1)
    assert widths.shape == (len(model) + 1,)
    for w, (lo, hi) in zip(widths, bounds):
        assert w == pytest.approx(float((hi - lo).mean()))
    # the input box: 2 eps per pixel, less where clipping at 0 or 1 cuts it
    clipped = ((x + 0.1).clamp(max=1) - (x - 0.1).clamp(min=0)).mean()
    assert widths[0] == pytest.approx(float(clipped)) and widths[0] < 0.2
    assert np.allclose(ibp_widgets.layer_widths(model, x, 0.0), 0.0)
    # interval bounds grow with the box, layer by layer
    assert (ibp_widgets.layer_widths(model, x, 0.2) >= widths).all()
    assert ibp_widgets.layer_names(model) == ["input", "Flatten", "Linear 16->12", "ReLU", "Linear 12->3"]


def test_plot_draws_one_bar_per_layer_and_model(setup):
    model, x, y = setup
    other = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    ax = Figure().subplots()
    ibp_widgets.plot_layer_widths({"a": model, "b": other}, x, 0.05, ax=ax, y=y)
    assert len(ax.patches) == 2 * (len(model) + 1)
    heights = [p.get_height() for p in ax.patches[: len(model) + 1]]
    np.testing.assert_allclose(heights, ibp_widgets.layer_widths(model, x, 0.05))
    certified = int(ibp.certify(model, x, y, 0.05).sum())
    assert f"a ({certified} of 5 certified)" in [t.get_text() for t in ax.get_legend().get_texts()]
    with pytest.raises(ValueError, match="same number of layers"):
        ibp_widgets.plot_layer_widths({"a": model, "b": nn.Sequential(nn.Flatten(), nn.Linear(16, 3))}, x, 0.1, ax=ax)


def test_explorer_builds_and_redraws_on_the_slider(setup):
    model, x, y = setup
    ex = ibp_widgets.width_explorer(model, x, y, eps=0.05)
    assert bytes(ex.image.value[:8]) == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_allclose(ex.widths["model"], ibp_widgets.layer_widths(model, x, 0.05))
    before = bytes(ex.image.value)
    ex.eps.value = 0.2
    np.testing.assert_allclose(ex.widths["model"], ibp_widgets.layer_widths(model, x, 0.2))
    assert "eps = 0.200" in ex.ax.get_title() and bytes(ex.image.value) != before


@pytest.mark.parametrize("kwargs, name", [({"eps": 0.5}, "eps"), ({"eps": -0.1}, "eps"),
                                          ({"eps_max": 0.0, "eps": 0.0}, "eps_max")])
def test_bad_input_names_the_argument(setup, kwargs, name):
    model, x, y = setup
    with pytest.raises(ValueError, match=name):
        ibp_widgets.width_explorer(model, x, y, **kwargs)
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        ibp_widgets.width_explorer(model, x + 2, y)


@pytest.mark.parametrize("name, value", [("eps", 0.05), ("eps_max", 0.3)])
def test_argument_policy(setup, name, value):
    from argument_policy import check_policy

    model, x, y = setup
    check_policy(lambda v: ibp_widgets.width_explorer(model, x, y, **{name: v}), name, value)


@pytest.mark.parametrize("which", ["layer_widths", "plot_layer_widths"])
def test_argument_policy_of_the_plotting_helpers(setup, which):
    from argument_policy import check_policy

    model, x, y = setup
    if which == "layer_widths":
        call, same = (lambda v: ibp_widgets.layer_widths(model, x, v)), np.array_equal
    else:
        call, same = (lambda v: ibp_widgets.plot_layer_widths({"m": model}, x, v, ax=Figure().subplots()).get_title()), str.__eq__
    check_policy(call, "eps", 0.05, same)


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(ibp_widgets).failed == 0
