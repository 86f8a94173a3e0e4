"""Pictures the lectures draw more than once: loss landscapes with iterate paths,
training curves.

Every function draws with matplotlib's object API on an ``Axes`` it is given (or on
a new figure from ``plt.subplots`` when none is given), never calls ``plt.show()``,
and returns what it drew on, so a notebook cell can add to it or a test can read it.

Names follow :mod:`course_lib.optim`: ``w`` parameters, ``lr`` step size; a *path*
is a tensor of iterates (T, 2), ``path[0]`` the starting point, as returned by
:func:`course_lib.optim.sgd_path`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from course_lib import _checks

LossFn = Callable[[Tensor], Tensor]
"""``loss_fn(W)``: the loss at points ``W`` of shape (..., 2), returning shape (...)."""

FAR = 10.0
"""A path is drawn until it leaves the plotted box grown ``FAR`` times around its centre."""


def _new_axes(figsize: tuple[float, float]) -> Axes:
    import matplotlib.pyplot as plt  # only when the caller gave no Axes

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _check_limits(lim: Sequence[float], name: str) -> tuple[float, float]:
    try:
        lo, hi = lim
        lo = _checks.number(lo, name)
        return lo, _checks.number(hi, name, gt=lo)
    except (TypeError, ValueError):
        raise _checks.fail(name, "a pair (low, high) of finite numbers with low < high", lim) from None


def _check_path(path: Tensor, what: str) -> Tensor:
    if not isinstance(path, Tensor) or path.ndim != 2 or path.shape[1] != 2 or path.shape[0] < 1:
        shape = tuple(path.shape) if isinstance(path, Tensor) else type(path).__name__
        raise ValueError(f"{what} must be a tensor of iterates (T, 2) with T >= 1, got {shape}")
    return path.detach().to("cpu", torch.float64)


def drawable_prefix(path: Tensor, xlim: Sequence[float], ylim: Sequence[float]) -> Tensor:
    """The part of a path worth drawing: iterates up to the first one that is far away.

    A diverging run grows to huge values, then inf and nan. The prefix kept here ends
    with the first iterate outside the box ``xlim`` x ``ylim`` grown :data:`FAR` times
    about its centre (kept, so the line visibly leaves the picture), or just before
    the first non-finite iterate.

    Args:
        path: iterates, shape (T, 2).
        xlim, ylim: the plotted box, ``(low, high)`` each.

    Returns:
        ``path[:k]`` for some ``1 <= k <= T`` (``k = 0`` only if ``path[0]`` is not finite),
        float64 on the CPU.

    Raises:
        ValueError: if ``path`` is not (T, 2) or a limit is not a finite ``(low, high)``.

    Examples:
        >>> path = torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 0.0], [float("inf"), 0.0]])
        >>> drawable_prefix(path, (-1, 1), (-1, 1)).shape  # up to the first far iterate
        torch.Size([3, 2])
    """
    path = _check_path(path, "path")
    (x0, x1), (y0, y1) = _check_limits(xlim, "xlim"), _check_limits(ylim, "ylim")
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, FAR * (x1 - x0) / 2, FAR * (y1 - y0) / 2
    finite = torch.isfinite(path).all(dim=1)
    far = ((path[:, 0] - cx).abs() > rx) | ((path[:, 1] - cy).abs() > ry)
    stop = (~finite | far).nonzero()
    if len(stop) == 0:
        return path
    k = int(stop[0])
    return path[: k + 1] if finite[k] else path[:k]


def _contour_levels(Z: np.ndarray, levels: int | Sequence[float]) -> np.ndarray:
    if np.ndim(levels) == 0:  # a count of levels (a bool, a float or a string is refused)
        levels = _checks.integer(levels, "levels", ge=2)
        lo, hi = float(np.nanmin(Z)), float(np.nanmax(Z))
        if not hi > lo:
            raise ValueError(f"loss_fn is constant ({lo}) on the grid; pass explicit levels")
        # geometric above the grid's minimum: the curved part near the minimizer gets lines too
        return lo + np.geomspace((hi - lo) * 1e-3, hi - lo, int(levels))
    arr = np.asarray(levels, dtype=float)
    if arr.ndim != 1 or len(arr) < 2 or not np.all(np.diff(arr) > 0) or not np.all(np.isfinite(arr)):
        raise ValueError(f"levels must be an integer >= 2 or an increasing sequence, got {levels!r}")
    return arr


def landscape_grid(loss_fn: LossFn, xlim: Sequence[float], ylim: Sequence[float],
                   resolution: int = 120, dtype: torch.dtype | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate a 2-parameter loss on a regular grid, in one call of ``loss_fn``.

    Args:
        loss_fn: maps points (..., 2) to losses (...), e.g. ``Quadratic.loss`` or
            ``LeastSquares.loss``.
        xlim, ylim: ``(low, high)`` ranges of w[0] and w[1].
        resolution: grid points per axis, >= 2.
        dtype: dtype of the grid points; default ``torch.get_default_dtype()``.

    Returns:
        ``(xs, ys, Z)``: xs (R,), ys (R,) and Z (R, R) with ``Z[i, j] = loss_fn((xs[j], ys[i]))``,
        NumPy float64 (the layout ``Axes.contour`` expects).

    Raises:
        ValueError: for bad limits or resolution, or if ``loss_fn`` does not return (R, R).

    Examples:
        >>> xs, ys, Z = landscape_grid(lambda W: (W ** 2).sum(-1), (-1, 1), (-2, 2), resolution=5)
        >>> Z.shape, float(Z.min())
        ((5, 5), 0.0)
    """
    x0, x1 = _check_limits(xlim, "xlim")
    y0, y1 = _check_limits(ylim, "ylim")
    resolution = _checks.integer(resolution, "resolution", ge=2)
    dtype = dtype or torch.get_default_dtype()
    xs = torch.linspace(x0, x1, int(resolution), dtype=dtype)
    ys = torch.linspace(y0, y1, int(resolution), dtype=dtype)
    W = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (R, R, 2); W[i, j] = (xs[j], ys[i])
    with torch.no_grad():
        Z = loss_fn(W)
    if not isinstance(Z, Tensor) or Z.shape != W.shape[:2]:
        got = tuple(Z.shape) if isinstance(Z, Tensor) else type(Z).__name__
        raise ValueError(f"loss_fn must map points (..., 2) to losses (...); on a grid {tuple(W.shape)} "
                         f"it returned {got}")
    return xs.double().numpy(), ys.double().numpy(), Z.detach().cpu().double().numpy()


def plot_landscape(loss_fn: LossFn, paths: Mapping[str, Tensor] | None = None, *,
                   ax: Axes | None = None, xlim: Sequence[float] = (-3.0, 3.0),
                   ylim: Sequence[float] = (-3.0, 3.0), levels: int | Sequence[float] = 20,
                   resolution: int = 120, minimizer: Tensor | None = None,
                   title: str | None = None, legend: bool = True) -> Axes:
    """Contours of a 2-parameter loss with iterate paths drawn on top.

    Args:
        loss_fn: maps points (..., 2) to losses (...).
        paths: label -> iterates (T, 2), e.g. from :func:`course_lib.optim.gd_path`.
            Each is drawn as a line with a dot per iterate and a square at ``path[0]``;
            a diverging path is cut where :func:`drawable_prefix` says.
        ax: where to draw; default a new 5 x 4 inch figure.
        xlim, ylim: the plotted box, ``(low, high)`` for w[0] and w[1].
        levels: number of contour lines (spaced geometrically above the grid's minimum
            loss) or their increasing values.
        resolution: grid points per axis for the contours.
        minimizer: optional point (2,) marked with a star.
        title: optional axes title.
        legend: add a legend when there are paths.

    Returns:
        The Axes. Each path is the ``Line2D`` whose label is its key in ``paths``.

    Raises:
        ValueError: if a path is not (T, 2), the limits, levels or resolution are bad,
            ``minimizer`` is not (2,), or ``loss_fn`` does not map (..., 2) to (...).

    Examples:
        >>> from matplotlib.figure import Figure
        >>> from course_lib.optim import gd_path
        >>> path = gd_path(lambda w, idx: w, torch.tensor([2.0, 1.0]), lr=0.5, steps=5)
        >>> ax = plot_landscape(lambda W: 0.5 * (W ** 2).sum(-1), {"GD": path}, ax=Figure().subplots())
        >>> [line.get_label() for line in ax.get_lines() if line.get_label() == "GD"]
        ['GD']
    """
    paths = {} if paths is None else paths
    if not isinstance(paths, Mapping):
        raise ValueError(f"paths must be a mapping label -> iterates (T, 2), got {type(paths).__name__}")
    checked = {name: _check_path(path, f"paths[{name!r}]") for name, path in paths.items()}
    if minimizer is not None and (not isinstance(minimizer, Tensor) or minimizer.shape != (2,)):
        got = tuple(minimizer.shape) if isinstance(minimizer, Tensor) else type(minimizer).__name__
        raise ValueError(f"minimizer must be a tensor of shape (2,), got {got}")
    dtype = next((p.dtype for p in paths.values()), None)
    xs, ys, Z = landscape_grid(loss_fn, xlim, ylim, resolution, dtype)
    lv = _contour_levels(Z, levels)
    ax = ax if ax is not None else _new_axes((5.0, 4.0))
    ax.contour(xs, ys, Z, levels=lv, cmap="viridis", linewidths=0.8)
    for name, path in checked.items():
        drawn = drawable_prefix(path, xlim, ylim).numpy()
        (line,) = ax.plot(drawn[:, 0], drawn[:, 1], "-o", ms=2.5, lw=1.2, label=str(name))
        ax.plot(drawn[:1, 0], drawn[:1, 1], "s", ms=6, color=line.get_color(), label="_nolegend_")
    if minimizer is not None:
        m = minimizer.detach().cpu().double().numpy()
        ax.plot(m[:1], m[1:], "*", ms=12, color="black", label="_nolegend_")
    ax.set_xlim(float(xs[0]), float(xs[-1]))
    ax.set_ylim(float(ys[0]), float(ys[-1]))
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    if title is not None:
        ax.set_title(title)
    if legend and checked:
        ax.legend(fontsize="small", loc="best")
    return ax


def _as_curve(values: Sequence[float], what: str, logy: bool) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a sequence of numbers, got {values!r}") from None
    if arr.ndim != 1 or len(arr) == 0:
        raise ValueError(f"{what} must be a non-empty sequence of numbers, got {values!r}")
    bad = ~np.isfinite(arr) | ((arr <= 0) if logy else False)
    return np.where(bad, np.nan, arr)  # nan leaves a gap; inf would break the autoscale


def plot_curves(curves: Mapping[str, Sequence[float]], *, ax: Axes | None = None,
                xlabel: str = "epoch", ylabel: str = "loss", logy: bool = False,
                start: int = 1, title: str | None = None) -> Axes:
    """One line per named sequence, e.g. the training loss of several runs.

    Args:
        curves: label -> values, value ``t`` drawn at x = ``start + t``. Non-finite
            values (a diverged run), and non-positive ones when ``logy``, leave gaps.
        ax: where to draw; default a new 5 x 3.5 inch figure.
        xlabel, ylabel: axis labels.
        logy: logarithmic y axis.
        start: x of the first value (1 for epochs, 0 for iterates).
        title: optional axes title.

    Returns:
        The Axes; each curve is the ``Line2D`` labelled with its key.

    Raises:
        ValueError: if ``curves`` is empty or a curve is not a non-empty sequence of numbers.

    Examples:
        >>> from matplotlib.figure import Figure
        >>> ax = plot_curves({"run 1": [1.0, 0.5, 0.25]}, logy=True, ax=Figure().subplots())
        >>> ax.get_lines()[0].get_xydata().tolist()
        [[1.0, 1.0], [2.0, 0.5], [3.0, 0.25]]
    """
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise ValueError(f"curves must be a non-empty mapping label -> values, got {curves!r}")
    arrays = {name: _as_curve(values, f"curves[{name!r}]", logy) for name, values in curves.items()}
    ax = ax if ax is not None else _new_axes((5.0, 3.5))
    for name, arr in arrays.items():
        ax.plot(np.arange(start, start + len(arr)), arr, "-", marker="." if len(arr) <= 50 else None,
                label=str(name))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def plot_history(history: Mapping[str, Sequence[float]], *,
                 metrics: Sequence[str] = ("loss", "accuracy"),
                 axes: Sequence[Axes] | None = None, label: str | None = None) -> list[Axes]:
    """Training curves from :func:`course_lib.train.train`: one panel per metric.

    Each panel shows ``history[metric]`` (training, solid) and, when present,
    ``history["val_" + metric]`` (validation, dashed, same colour) against the epoch.

    Args:
        history: the dict ``train`` returns, e.g. ``{"loss": [...], "accuracy": [...],
            "val_loss": [...], "val_accuracy": [...]}``; one value per epoch.
        metrics: which keys to plot, one panel each.
        axes: one Axes per metric; default a new figure with a row of panels.
        label: prefix for the legend entries (to overlay several runs on the same axes).

    Returns:
        The list of Axes, one per metric.

    Raises:
        ValueError: if ``metrics`` is empty or names a key ``history`` lacks, a
            validation curve's length differs from the training curve's, or
            ``axes`` does not hold one Axes per metric.

    Examples:
        >>> from matplotlib.figure import Figure
        >>> axes = plot_history({"loss": [1.0, 0.5], "accuracy": [0.6, 0.8]}, axes=Figure().subplots(1, 2))
        >>> [ax.get_ylabel() for ax in axes]
        ['loss', 'accuracy']
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one key of history, got an empty sequence")
    missing = [m for m in metrics if m not in history]
    if missing:
        raise ValueError(f"metrics {missing} are not in history (its keys: {sorted(history)})")
    for m in metrics:
        val = history.get(f"val_{m}")
        if val is not None and len(val) != len(history[m]):
            raise ValueError(f"history['val_{m}'] has {len(val)} values but history['{m}'] has "
                             f"{len(history[m])}; expected one per epoch in both")
    if axes is None:
        import matplotlib.pyplot as plt

        _, grid = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.2), squeeze=False)
        axes = list(grid[0])
    else:
        axes = list(axes)
        if len(axes) != len(metrics):
            raise ValueError(f"axes must hold one Axes per metric ({len(metrics)}), got {len(axes)}")
    prefix = f"{label} " if label else ""
    for ax, m in zip(axes, metrics):
        train = _as_curve(history[m], f"history[{m!r}]", logy=False)
        epochs = np.arange(1, len(train) + 1)
        (line,) = ax.plot(epochs, train, "-", label=f"{prefix}train")
        if f"val_{m}" in history:
            val = _as_curve(history[f"val_{m}"], f"history['val_{m}']", logy=False)
            ax.plot(epochs, val, "--", color=line.get_color(), label=f"{prefix}validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(m)
        ax.legend(fontsize="small")
    return axes
