import math

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from course_lib import objectives, optim
from course_lib.widgets import plots

matplotlib.use("Agg")  # no display in tests (conftest does it too)

pytestmark = pytest.mark.optim


@pytest.fixture
def ax():
    return Figure().add_subplot()  # a figure outside pyplot: nothing piles up between tests


def _line(ax, label):
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return line


def _quadratic():
    return objectives.Quadratic(torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64)))


@pytest.mark.parametrize("seed", range(5))
def test_landscape_draws_each_path_through_its_iterates(ax, seed):
    quad = _quadratic()
    gen = torch.Generator().manual_seed(seed)
    w0 = (torch.rand(2, generator=gen, dtype=torch.float64) - 0.5) * 4
    paths = {"slow": optim.gd_path(quad.grad, w0, 0.02, 10), "fast": optim.gd_path(quad.grad, w0, 0.15, 10)}
    out = plots.plot_landscape(quad.loss, paths, ax=ax, xlim=(-3, 3), ylim=(-3, 3), minimizer=quad.w_star)
    assert out is ax
    for label, path in paths.items():
        xy = _line(ax, label).get_xydata()
        np.testing.assert_allclose(xy, path.numpy())
    assert ax.get_xlim() == (-3.0, 3.0) and ax.get_ylim() == (-3.0, 3.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["slow", "fast"]


def test_landscape_contours_follow_the_loss_on_the_grid():
    quad = _quadratic()
    xs, ys, Z = plots.landscape_grid(quad.loss, (-1, 2), (-3, 1), resolution=7, dtype=torch.float64)
    assert xs.shape == (7,) and ys.shape == (7,) and Z.shape == (7, 7)
    i, j = 5, 2  # Z[i, j] is the loss at (xs[j], ys[i]), the layout contour() expects
    assert math.isclose(Z[i, j], 0.5 * xs[j] ** 2 + 5.0 * ys[i] ** 2, rel_tol=1e-12)


def test_explicit_levels_are_the_contour_levels(ax):
    quad = _quadratic()
    plots.plot_landscape(quad.loss, ax=ax, levels=[0.5, 1.0, 4.0])
    (contour,) = ax.collections
    np.testing.assert_allclose(contour.levels, [0.5, 1.0, 4.0])


def test_diverging_path_is_cut_where_it_leaves_the_picture(ax):
    quad = _quadratic()
    w0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    path = optim.gd_path(quad.grad, w0, 0.5, 600)  # lr > 2/L = 0.2: |1 - 5| = 4 per step, to inf
    assert not torch.isfinite(path[-1]).all()
    plots.plot_landscape(quad.loss, {"diverging": path}, ax=ax, xlim=(-2, 2), ylim=(-2, 2))
    xy = _line(ax, "diverging").get_xydata()
    assert np.isfinite(xy).all()
    # kept: everything inside the 10x box plus the first point outside it
    assert np.abs(xy[:-1]).max() <= plots.FAR * 2 and np.abs(xy[-1]).max() > plots.FAR * 2
    np.testing.assert_allclose(xy, path[: len(xy)].numpy())


def test_drawable_prefix_drops_a_non_finite_iterate():
    path = torch.tensor([[0.0, 0.0], [1.0, 1.0], [float("nan"), 0.0], [0.0, 0.0]])
    assert plots.drawable_prefix(path, (-3, 3), (-3, 3)).tolist() == [[0.0, 0.0], [1.0, 1.0]]
    path = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert plots.drawable_prefix(path, (-3, 3), (-3, 3)).tolist() == path.tolist()


@pytest.mark.parametrize("kwargs, name", [
    ({"paths": {"p": torch.zeros(3, 3)}}, r"paths\['p'\]"),
    ({"paths": {"p": torch.zeros(3)}}, r"paths\['p'\]"),
    ({"paths": [torch.zeros(3, 2)]}, "paths"),
    ({"xlim": (1, -1)}, "xlim"),
    ({"ylim": (0, float("inf"))}, "ylim"),
    ({"xlim": "ab"}, "xlim"),
    ({"levels": 1}, "levels"),
    ({"levels": [2.0, 1.0]}, "levels"),
    ({"resolution": 1}, "resolution"),
    ({"minimizer": torch.zeros(3)}, "minimizer"),
])
def test_landscape_bad_input_names_the_argument(ax, kwargs, name):
    with pytest.raises(ValueError, match=name):
        plots.plot_landscape(_quadratic().loss, ax=ax, **kwargs)


def test_landscape_rejects_a_loss_that_is_not_pointwise(ax):
    with pytest.raises(ValueError, match="loss_fn"):
        plots.plot_landscape(lambda W: W.sum(), ax=ax)


def test_landscape_works_for_least_squares_in_float32(ax):
    problem = objectives.make_regression_2d(n=50)
    path = optim.sgd_path(problem.grad, torch.zeros(2), 0.5, 5, n=50, batch_size=5,
                          generator=torch.Generator().manual_seed(0))
    plots.plot_landscape(problem.loss, {"sgd": path}, ax=ax, xlim=(-1, 4), ylim=(-3, 2))
    np.testing.assert_allclose(_line(ax, "sgd").get_xydata(), path.double().numpy())


def test_history_panels_show_train_and_validation():
    history = {"loss": [2.0, 1.0, 0.5], "accuracy": [0.2, 0.6, 0.9],
               "val_loss": [2.1, 1.2, 0.8], "val_accuracy": [0.2, 0.5, 0.8]}
    axes = plots.plot_history(history)
    assert len(axes) == 2
    for ax, metric in zip(axes, ["loss", "accuracy"]):
        np.testing.assert_allclose(_line(ax, "train").get_ydata(), history[metric])
        np.testing.assert_allclose(_line(ax, "validation").get_ydata(), history[f"val_{metric}"])
        np.testing.assert_allclose(_line(ax, "train").get_xdata(), [1, 2, 3])
        assert ax.get_ylabel() == metric


def test_history_without_validation_and_with_given_axes(ax):
    axes = plots.plot_history({"loss": [1.0, 0.5]}, metrics=["loss"], axes=[ax], label="run")
    assert axes == [ax]
    assert [ln.get_label() for ln in ax.get_lines()] == ["run train"]


@pytest.mark.parametrize("kwargs, name", [
    ({"metrics": ["f1"]}, "metrics"),
    ({"metrics": []}, "metrics"),
    ({"axes": []}, "axes"),
])
def test_history_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        plots.plot_history({"loss": [1.0], "accuracy": [0.5]}, **kwargs)


def test_history_rejects_mismatched_validation_curve():
    with pytest.raises(ValueError, match="val_loss"):
        plots.plot_history({"loss": [1.0, 0.5], "val_loss": [1.0]}, metrics=["loss"])


def test_curves_leave_gaps_for_a_diverged_run(ax):
    plots.plot_curves({"ok": [1.0, 0.5, 0.25], "diverged": [1.0, float("inf"), float("nan")]},
                      ax=ax, logy=True, start=0)
    np.testing.assert_allclose(_line(ax, "ok").get_xdata(), [0, 1, 2])
    y = _line(ax, "diverged").get_ydata()
    assert y[0] == 1.0 and np.isnan(y[1:]).all()
    assert ax.get_yscale() == "log"


@pytest.mark.parametrize("curves", [{}, {"a": []}, {"a": ["x"]}, [1.0, 2.0]])
def test_curves_bad_input_names_the_argument(ax, curves):
    with pytest.raises(ValueError, match="curves"):
        plots.plot_curves(curves, ax=ax)


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases():
    loss = _quadratic().loss

    def grid(**kw):
        return plots.landscape_grid(loss, (-1, 1), (-1, 1), **(dict(resolution=5) | kw))[2]

    def n_contours(**kw):
        ax = plots.plot_landscape(loss, ax=Figure().subplots(), **(dict(resolution=10) | kw))
        return len(ax.collections)

    return [
        (lambda v: grid(resolution=v), "resolution", 5, np.array_equal),
        (lambda v: n_contours(resolution=v), "resolution", 10, int.__eq__),
        (lambda v: n_contours(levels=v), "levels", 7, int.__eq__),
        (lambda v: plots.landscape_grid(loss, (v, 1), (-1, 1), 3)[2], "xlim", -1.0, np.array_equal),
        (lambda v: plots.drawable_prefix(torch.zeros(3, 2), (-1, 1), (v, 1)), "ylim", -1.0, torch.equal),
    ]


@pytest.mark.parametrize("case", range(len(_policy_cases())))
def test_argument_policy(case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases()[case]
    check_policy(call, name, value, same)


def test_docstring_examples():
    import doctest

    assert doctest.testmod(plots).failed == 0
