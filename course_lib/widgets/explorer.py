"""What every explorer in :mod:`course_lib.widgets` shares: a matplotlib figure outside pyplot,
shown through an ``ipywidgets.Image`` as a PNG, so it works with any backend and needs no ipympl."""

from __future__ import annotations

import io
from collections.abc import Sequence

import ipywidgets as widgets
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from course_lib import _checks


def png_bytes(figure: Figure, dpi: int = 90, colors: int = 128) -> bytes:
    """The figure as a palette PNG: a quarter of the bytes of full colour, no visible loss for
    line art, which keeps the widget state that a saved notebook stores small."""
    from PIL import Image  # a dependency of matplotlib

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    image = Image.open(buffer).convert("RGB").quantize(colors)
    out = io.BytesIO()
    image.save(out, format="png", optimize=True)
    return out.getvalue()


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib ``Figure`` with a canvas of its own (Agg), drawn without pyplot."""
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def eps_slider(eps: float, eps_max: float, *, ticks: int = 60, description: str = "eps") -> widgets.FloatSlider:
    """A radius slider on [0, eps_max] starting at ``eps``, after checking both.

    Raises:
        ArgumentError: unless ``0 < eps_max`` and ``0 <= eps <= eps_max`` (both finite numbers).
    """
    eps_max = _checks.number(eps_max, "eps_max", gt=0)
    eps = _checks.number(eps, "eps", ge=0, le=eps_max)
    return widgets.FloatSlider(value=eps, min=0.0, max=eps_max, step=eps_max / ticks, description=description,
                               continuous_update=False, readout_format=".3f")


class Explorer(widgets.VBox):
    """Controls above a picture that is redrawn whenever a control's value changes.

    The base of every explorer in :mod:`course_lib.widgets`. A subclass builds its controls
    and its figure (:func:`new_figure`), calls ``super().__init__(controls, figure)`` and
    implements :meth:`draw`, which recomputes and draws on the figure from the controls'
    values. The picture is a PNG in an ``ipywidgets.Image`` (``explorer.image.value``), so it
    works with any matplotlib backend and needs no ipympl; ``explorer.figure`` can be
    displayed on its own as the static version of the demo (a saved notebook does not keep
    live widgets).

    Attributes:
        controls: the widgets whose ``value`` drives the picture; set ``.value`` to move
            one from code.
        figure: the matplotlib ``Figure``.
        image: the ``ipywidgets.Image`` showing it.
    """

    def __init__(self, controls: Sequence[widgets.Widget], figure: Figure, *,
                 extra: Sequence[widgets.Widget] = ()) -> None:
        self.controls = list(controls)
        self.figure = figure
        self.image = widgets.Image(format="png")
        row = self.controls[0] if len(self.controls) == 1 else widgets.HBox(self.controls)
        super().__init__([row, *extra, self.image])
        for control in self.controls:
            control.observe(self.redraw, names="value")
        self.redraw()

    def draw(self) -> None:
        """Recompute from the controls' values and draw on :attr:`figure` (subclasses)."""
        raise NotImplementedError

    def redraw(self, change: dict | None = None) -> None:
        """The controls' callback: :meth:`draw`, then refresh the PNG."""
        self.draw()
        self.image.value = png_bytes(self.figure)
