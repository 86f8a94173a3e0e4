"""The base every explorer stands on (:mod:`course_lib.widgets.explorer`)."""

from __future__ import annotations

import doctest
import math

import pytest

from course_lib._checks import ArgumentError
from course_lib.widgets import explorer


class _Counter(explorer.Explorer):
    """A minimal explorer: one slider, a figure whose title shows the slider's value."""

    def __init__(self) -> None:
        self.draws = 0
        self.slider = explorer.eps_slider(0.1, 0.3)
        figure = explorer.new_figure((2.0, 1.5))
        self.ax = figure.add_subplot()
        super().__init__([self.slider], figure)

    def draw(self) -> None:
        self.draws += 1
        self.ax.set_title(f"{self.slider.value:.2f}")


def test_a_control_change_redraws_and_refreshes_the_png():
    ex = _Counter()
    first = bytes(ex.image.value)
    assert ex.draws == 1 and first.startswith(b"\x89PNG") and ex.children[-1] is ex.image
    ex.slider.value = 0.25
    assert ex.draws == 2 and ex.ax.get_title() == "0.25" and bytes(ex.image.value) != first


def test_the_base_alone_has_nothing_to_draw():
    with pytest.raises(NotImplementedError):
        explorer.Explorer([explorer.eps_slider(0.1, 0.3)], explorer.new_figure((1.0, 1.0)))


@pytest.mark.parametrize("eps, eps_max, name", [(0.5, 0.3, "eps"), (-0.1, 0.3, "eps"), (0.0, 0.0, "eps_max"),
                                                (True, 0.3, "eps"), (0.1, "0.3", "eps_max")])
def test_eps_slider_refuses_bad_radii_by_name(eps, eps_max, name):
    with pytest.raises(ArgumentError, match=name):
        explorer.eps_slider(eps, eps_max)


@pytest.mark.parametrize("name, value", [("eps", 0.1), ("eps_max", 0.3)])
def test_argument_policy(name, value):
    from argument_policy import check_policy

    args = {"eps": 0.1, "eps_max": 0.3}
    check_policy(lambda v: explorer.eps_slider(**(args | {name: v})).value, name, value,
                 lambda a, b: math.isclose(a, b, rel_tol=1e-6))  # a float32 0.1 is 0.1 to 7 digits


def test_docstring_examples_run():
    assert doctest.testmod(explorer).failed == 0
