import matplotlib
import numpy as np
import pytest
import torch

from course_lib import objectives, optim
from course_lib.widgets import sgd as widgets

matplotlib.use("Agg")  # no display in tests (conftest does it too)

pytestmark = pytest.mark.optim

W0 = torch.tensor([-1.0, 3.0])


@pytest.fixture(scope="module")
def problem():
    return objectives.make_regression_2d(n=40)


def _sgd_line(explorer):
    (line,) = [ln for ln in explorer.ax.get_lines() if ln.get_label().startswith("SGD")]
    return line


def test_explorer_builds_with_sliders_and_a_picture(problem):
    ex = widgets.sgd_explorer(problem, W0, lr=0.5, batch_size=4, steps=12, seed=3)
    assert ex.lr.value == pytest.approx(0.5) and ex.batch_size.value == 4
    assert ex.batch_size.max == problem.n
    assert bytes(ex.image.value[:8]) == b"\x89PNG\r\n\x1a\n"
    expected = optim.sgd_path(problem.grad, W0, 0.5, 12, n=problem.n, batch_size=4,
                              generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ex.path, expected)
    np.testing.assert_allclose(_sgd_line(ex).get_xydata(), expected.double().numpy())
    assert ex.path.shape == (13, 2) and ex.gd_path.shape == (13, 2)


def test_moving_a_slider_redraws_with_the_new_value(problem):
    ex = widgets.sgd_explorer(problem, W0, lr=0.5, batch_size=4, steps=12, seed=3)
    before = bytes(ex.image.value)
    ex.batch_size.value = 20
    ex.lr.value = 0.1
    expected = optim.sgd_path(problem.grad, W0, 0.1, 12, n=problem.n, batch_size=20,
                              generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ex.path, expected)
    np.testing.assert_allclose(_sgd_line(ex).get_xydata(), expected.double().numpy())
    torch.testing.assert_close(ex.gd_path, optim.gd_path(problem.grad, W0, 0.1, 12))
    assert _sgd_line(ex).get_label() == "SGD, batch size 20"
    assert "lr = 0.1," in ex.ax.get_title()
    assert bytes(ex.image.value) != before
    assert len([ln for ln in ex.ax.get_lines() if ln.get_label().startswith("SGD")]) == 1  # old path cleared


def test_same_sliders_give_the_same_path(problem):
    ex = widgets.sgd_explorer(problem, W0, lr=0.5, batch_size=4, steps=12)
    first = ex.path.clone()
    ex.lr.value = 0.2
    ex.lr.value = 0.5
    torch.testing.assert_close(ex.path, first)


def test_title_says_when_gd_diverges(problem):
    ex = widgets.sgd_explorer(problem, W0, lr=0.5, batch_size=4, steps=5)
    assert "GD converges" in ex.ax.get_title()
    ex.lr.value = 2.2 / problem.L
    assert "GD diverges" in ex.ax.get_title()


@pytest.mark.parametrize("kwargs, name", [
    ({"w0": torch.zeros(3)}, "w0"),
    ({"steps": 0}, "steps"),
    ({"lr_range": (0.0, 1.0)}, "lr_range"),
    ({"lr": 10.0}, "lr"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 41}, "batch_size"),
])
def test_bad_input_names_the_argument(problem, kwargs, name):
    args = {"w0": W0, **kwargs}
    with pytest.raises(ValueError, match=name):
        widgets.sgd_explorer(problem, **args)


# ---------------------------------------------------------------- one argument policy, examples

def _policy_cases(problem):
    def path(**kw):
        return widgets.sgd_explorer(problem, W0, **(dict(lr=0.5, batch_size=4, steps=3) | kw)).path

    return [
        (lambda v: path(lr=v), "lr", 0.5, None),  # a float32 rate is another rate
        (lambda v: path(batch_size=v), "batch_size", 4, torch.equal),
        (lambda v: path(steps=v), "steps", 3, torch.equal),
        (lambda v: path(seed=v), "seed", 2, torch.equal),
    ]


@pytest.mark.parametrize("case", range(4))
def test_argument_policy(problem, case):
    from argument_policy import check_policy

    call, name, value, same = _policy_cases(problem)[case]
    check_policy(call, name, value, same)


def test_explorer_is_an_explorer(problem):
    from course_lib.widgets.explorer import Explorer

    ex = widgets.sgd_explorer(problem, W0, lr=0.5, batch_size=4, steps=3)
    assert isinstance(ex, Explorer) and ex.controls == [ex.lr, ex.batch_size]


def test_docstring_examples():
    import doctest

    assert doctest.testmod(widgets).failed == 0
