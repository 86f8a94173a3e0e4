"""How wide the IBP bounds get, layer by layer, as eps grows (lecture 4).

:func:`layer_widths` computes what is drawn: the mean width ``upper - lower`` of the interval
bounds after every layer (:func:`course_lib.ibp.ibp_layer_bounds`), for a few examples.
:func:`plot_layer_widths` draws them as bars on a log scale, one per layer, with the widths of a
second model beside them when one is given (e.g. standard vs IBP-trained). :func:`width_explorer`
puts an eps slider above that picture. As in :mod:`course_lib.widgets.attacks`, the figure is a
matplotlib ``Figure`` outside pyplot shown through an ``ipywidgets.Image``.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor, nn

from course_lib import _checks, ibp
from course_lib.widgets.explorer import Explorer, eps_slider, new_figure


def layer_names(model: nn.Module) -> list[str]:
    """``["input", "Linear 784->256", "ReLU", ...]``: a short name per bound of :func:`layer_widths`."""
    names = ["input"]
    for layer in ibp.layers_of(model):
        if isinstance(layer, nn.Linear):
            names.append(f"Linear {layer.in_features}->{layer.out_features}")
        elif isinstance(layer, nn.Conv2d):
            names.append(f"Conv {layer.in_channels}->{layer.out_channels}")
        else:
            names.append(type(layer).__name__)
    return names


def layer_widths(model: nn.Module, x: Tensor, eps: float) -> np.ndarray:
    """Mean width of the IBP bounds after each layer, over the examples and coordinates.

    Args:
        model: an IBP-supported ``nn.Sequential``.
        x: inputs (N, ...) in [0, 1].
        eps: L-inf radius >= 0.

    Returns:
        float64 array (L + 1,): entry 0 is the input box's mean width (``2 eps`` where no clipping
        happens), entry i the mean of ``upper - lower`` after layer i - 1.
    """
    with torch.no_grad():
        bounds = ibp.ibp_layer_bounds(model, x, eps)
    return np.array([float((hi - lo).mean()) for lo, hi in bounds])


def plot_layer_widths(models: dict[str, nn.Module], x: Tensor, eps: float, *, ax: Axes | None = None,
                      y: Tensor | None = None) -> Axes:
    """Bars of :func:`layer_widths` per layer (log scale), one colour per model.

    Args:
        models: name -> model, all with the same layers (e.g. ``{"standard": m1, "IBP": m2}``).
        x: inputs (N, ...) in [0, 1].
        eps: L-inf radius >= 0.
        ax: where to draw; default a new pyplot figure.
        y: int64 labels (N,); when given, the legend says how many examples IBP certifies.

    Returns:
        The Axes; ``ax.patches`` holds the bars, model after model.

    Raises:
        ValueError: for no models, or models of different depths.
    """
    if not models:
        raise ValueError("models must hold at least one model")
    names = layer_names(next(iter(models.values())))
    if any(len(layer_names(m)) != len(names) for m in models.values()):
        raise ValueError("models must have the same number of layers")
    if ax is None:
        import matplotlib.pyplot as plt  # only when the caller gave no Axes

        _, ax = plt.subplots(figsize=(8, 3.5))
    k = len(models)
    width = 0.8 / k
    positions = np.arange(len(names))
    for i, (name, model) in enumerate(models.items()):
        widths = np.maximum(layer_widths(model, x, eps), 1e-12)  # log scale: no zero
        label = name
        if y is not None:
            label += f" ({int(ibp.certify(model, x, y, eps).sum())} of {len(y)} certified)"
        ax.bar(positions + (i - (k - 1) / 2) * width, widths, width=width, label=label)
    ax.set_yscale("log")
    ax.set_xticks(positions, names, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("mean width of the bounds")
    ax.set_title(f"IBP bounds layer by layer, eps = {eps:.3f}")
    ax.legend(fontsize="small")
    return ax


class WidthExplorer(Explorer):
    """An eps slider above :func:`plot_layer_widths`. Attributes: ``eps`` (the slider),
    ``image`` (the PNG), ``figure``, ``ax``, ``widths`` (name -> the last :func:`layer_widths`)."""

    def __init__(self, models: dict[str, nn.Module], x: Tensor, y: Tensor | None, *, eps: float,
                 eps_max: float, figsize: tuple[float, float]) -> None:
        self.models, self.x, self.y = models, x.detach(), y
        self.eps = eps_slider(eps, eps_max, ticks=50)
        figure = new_figure(figsize)
        self.ax = figure.subplots()
        self.widths: dict[str, np.ndarray] = {}
        super().__init__([self.eps], figure)

    def draw(self) -> None:
        """Recompute the bounds at the slider's eps and draw them."""
        eps = float(self.eps.value)
        self.widths = {name: layer_widths(m, self.x, eps) for name, m in self.models.items()}
        self.ax.clear()
        plot_layer_widths(self.models, self.x, eps, ax=self.ax, y=self.y)


def width_explorer(models: dict[str, nn.Module] | nn.Module, x: Tensor, y: Tensor | None = None, *,
                   eps: float = 0.05, eps_max: float = 0.3,
                   figsize: tuple[float, float] = (8.0, 3.5)) -> WidthExplorer:
    """An eps slider over the bounds' widths layer by layer.

    Args:
        models: one model, or name -> model (same layers), IBP-supported.
        x: a few inputs (N, ...) in [0, 1].
        y: int64 labels (N,), to count certified examples in the legend; optional.
        eps: initial radius, in [0, eps_max].
        eps_max: the slider's largest radius, > 0.
        figsize: the picture's size in inches.

    Returns:
        A :class:`WidthExplorer` (an ``ipywidgets.VBox``); display it in a notebook.

    Raises:
        ValueError: for ``eps_max <= 0``, ``eps`` outside [0, eps_max], or x outside [0, 1].

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> explorer = width_explorer(model, torch.rand(3, 1, 2, 2), eps=0.1)
        >>> explorer.widths["model"].shape
        (3,)
    """
    if isinstance(models, nn.Module):
        models = {"model": models}
    eps_max = _checks.number(eps_max, "eps_max", gt=0)
    eps = _checks.number(eps, "eps", ge=0, le=eps_max)
    ibp.input_box(x, 0.0)  # checks x: a batch in [0, 1]
    return WidthExplorer(models, x, y, eps=eps, eps_max=eps_max, figsize=figsize)
