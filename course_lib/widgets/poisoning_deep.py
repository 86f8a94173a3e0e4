"""Certified training against poisoning, as a picture and a widget (lecture 10).

:func:`margin_bounds` turns the parameter box of :func:`course_lib.certified_training.agt_train` into an
interval on each test point's margin ``z_y - max_{j != y} z_j``: positive lower end, the prediction is
certified correct; negative upper end, certified wrong; otherwise not certified.
:func:`plot_margins` draws those intervals, sorted, beside the plain run's margins.
:func:`certified_curve` is certified accuracy against the number of poisoned points k.
:func:`certified_poisoning_explorer`: a k slider and a threat switch (label flips, or features moved
within eps) above both pictures (an :class:`~course_lib.widgets.explorer.Explorer`).

Names follow :mod:`course_lib.certified_training`: ``k`` poisoned points per batch, ``eps`` the
L-inf radius of the feature poisoning, ``epochs``, ``lr``, ``batch_size``, ``seed`` the training run.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor, nn

from course_lib import _checks
from course_lib import certified_training as ct
from course_lib.widgets.explorer import Explorer, new_figure

__all__ = ["CertifiedPoisoningExplorer", "THREATS", "certified_curve", "certified_poisoning_explorer",
           "margin_bounds", "plot_margins"]

THREATS = ("label flips", "features")


def margin_bounds(model: nn.Module, param_lower: list[Tensor], param_upper: list[Tensor], X: Tensor,
                  y: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds on the margin ``z_y - max_{j != y} z_j`` of each input over the parameter box.

    Args:
        model, param_lower, param_upper: as for :func:`course_lib.certified_training.logit_bounds`.
        X: inputs (N, d); y: int64 labels (N,) in [0, K).

    Returns:
        ``(lower, upper)``, float64 (N,): every parameter in the box gives a margin in
        ``[lower, upper]`` (``lower = z_y^L - max_j z_j^U``, ``upper = z_y^U - max_j z_j^L``). The
        prediction is certified correct exactly when ``lower > 0`` (as
        :func:`course_lib.certified_training.certified_predictions` decides).

    Raises:
        ValueError: if y is not an int64 tensor (N,) of labels in [0, K), or as ``logit_bounds``.
    """
    z_lower, z_upper = ct.logit_bounds(model, param_lower, param_upper, X)
    K = z_lower.shape[1]
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (len(X),) or (y < 0).any() or (y >= K).any():
        raise ValueError(f"y must be an int64 tensor of shape ({len(X)},) with labels in [0, {K})")
    y = y.to(z_lower.device)
    others = torch.nn.functional.one_hot(y, K).bool()
    rows = torch.arange(len(y), device=y.device)
    lower = z_lower[rows, y] - z_upper.masked_fill(others, -torch.inf).amax(1)
    upper = z_upper[rows, y] - z_lower.masked_fill(others, -torch.inf).amax(1)
    return lower, upper


def _threat(threat: str, eps: float) -> dict:
    threat = _checks.choice(threat, "threat", THREATS)
    return {"eps": 0.0, "label_flip": True} if threat == "label flips" else {"eps": eps, "label_flip": False}


def certified_curve(model: nn.Module, X: Tensor, y: Tensor, X_test: Tensor, y_test: Tensor, ks, *,
                    threat: str = "label flips", eps: float = 0.05, epochs: int = 3, lr: float = 0.3,
                    batch_size: int | None = None, seed: int = 0) -> list[float]:
    """Certified test accuracy after :func:`~course_lib.certified_training.agt_train` for each k in ``ks``.

    Args:
        model, X, y, epochs, lr, seed: as for ``agt_train``; ``batch_size`` None is the full batch.
        X_test, y_test: test inputs (M, d) and int64 labels (M,).
        ks: the numbers of poisoned points per batch, integers in [0, batch_size].
        threat: ``"label flips"`` (eps 0, any label) or ``"features"`` (features within ``eps``, labels kept).
        eps: the L-inf radius of the feature threat, >= 0.

    Returns:
        One certified accuracy in [0, 1] per k.
    """
    eps = _checks.number(eps, "eps", ge=0)
    batch_size = len(y) if batch_size is None else _checks.integer(batch_size, "batch_size", ge=1)
    threat_kwargs = _threat(threat, eps)
    out = []
    for k in ks:
        lo, hi = ct.agt_train(model, X, y, k=k, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                              **threat_kwargs)
        out.append(ct.certified_accuracy(model, lo, hi, X_test, y_test))
    return out


def plot_margins(ax: Axes, lower: Tensor, upper: Tensor, plain: Tensor | None = None) -> Axes:
    """Margin intervals of the test points, sorted by their lower end, coloured by verdict.

    Green: certified correct (lower > 0); red: certified wrong (upper < 0); grey: not certified.
    ``plain`` (N,), the margins of the unpoisoned run, drawn as black dots (each inside its interval).

    Returns:
        ax, titled with the certified accuracy.
    """
    lo, hi = lower.detach().cpu().double().numpy(), upper.detach().cpu().double().numpy()
    order = np.argsort(lo, kind="stable")
    idx = np.arange(len(lo))
    colors = np.where(lo[order] > 0, "tab:green", np.where(hi[order] < 0, "tab:red", "0.6"))
    ax.vlines(idx, lo[order], hi[order], colors=colors, lw=2)
    if plain is not None:
        ax.plot(idx, plain.detach().cpu().double().numpy()[order], "k.", ms=3, label="plain run")
        ax.legend(fontsize="x-small", loc="upper left")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="test point (sorted by lower bound)", ylabel="margin z_y - max z_j")
    ax.set_title(f"certified correct: {float((lo > 0).mean()):.1%}", fontsize="medium")
    return ax


class CertifiedPoisoningExplorer(Explorer):
    """A k slider and a threat switch above certified accuracy against k and the margin intervals.

    Build it with :func:`certified_poisoning_explorer`. Attributes: ``k`` (``IntSlider``), ``threat``
    (``ToggleButtons``); ``figure``, ``ax_curve``, ``ax_margin``; ``curves``: threat -> certified
    accuracies for k = 0..k_max (computed on first use); ``bounds``: the margin bounds last drawn.
    """

    def __init__(self, model: nn.Module, X: Tensor, y: Tensor, X_test: Tensor, y_test: Tensor, *, k: int,
                 k_max: int, eps: float, schedule: dict, figsize: tuple[float, float]) -> None:
        self.model, self.X, self.y, self.X_test, self.y_test = model, X, y, X_test, y_test
        self.eps, self.schedule, self.k_max = eps, schedule, k_max
        plain = ct.sgd_train(model, X, y, **schedule)
        with torch.no_grad():
            z = plain(X_test.to(torch.float64)).double()
        rows = torch.arange(len(y_test))
        self.plain_margin = z[rows, y_test] - z.scatter(1, y_test[:, None], -torch.inf).amax(1)
        self.curves: dict[str, list[float]] = {}
        self.bounds: tuple[Tensor, Tensor] | None = None
        self.k = widgets.IntSlider(value=k, min=0, max=k_max, step=1, description="k", continuous_update=False)
        self.threat = widgets.ToggleButtons(options=list(THREATS), value=THREATS[0], description="threat")
        figure = new_figure(figsize)
        self.ax_curve, self.ax_margin = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
        super().__init__([self.k], figure, extra=[self.threat])
        self.controls.append(self.threat)
        self.threat.observe(self.redraw, names="value")

    def draw(self) -> None:
        """Bound the training run for the widgets' k and threat, and redraw both panels."""
        threat, k = self.threat.value, int(self.k.value)
        if threat not in self.curves:
            self.curves[threat] = certified_curve(self.model, self.X, self.y, self.X_test, self.y_test,
                                                  range(self.k_max + 1), threat=threat, eps=self.eps,
                                                  **self.schedule)
        lo, hi = ct.agt_train(self.model, self.X, self.y, k=k, **self.schedule, **_threat(threat, self.eps))
        self.bounds = margin_bounds(self.model, lo, hi, self.X_test, self.y_test)
        curve = self.curves[threat]
        self.ax_curve.clear()
        self.ax_curve.plot(range(self.k_max + 1), curve, "o-", ms=3)
        self.ax_curve.plot([k], [curve[k]], "o", ms=9, mfc="none", mec="tab:red")
        label = "label flips" if threat == "label flips" else f"features, eps = {self.eps:g}"
        self.ax_curve.set(xlabel="k (poisoned points)", ylabel="certified accuracy", ylim=(-0.03, 1.03),
                          title=label)
        self.ax_margin.clear()
        plot_margins(self.ax_margin, *self.bounds, self.plain_margin)


def certified_poisoning_explorer(model: nn.Module, X: Tensor, y: Tensor, X_test: Tensor, y_test: Tensor, *,
                                 k: int = 1, k_max: int = 8, eps: float = 0.05, epochs: int = 3, lr: float = 0.3,
                                 batch_size: int | None = None, seed: int = 0,
                                 figsize: tuple[float, float] = (9.0, 3.4)) -> CertifiedPoisoningExplorer:
    """Move k, the number of poisoned training points, and watch the certificates of a test set go.

    Args:
        model: ``nn.Linear(d, K)`` or ``Sequential(Linear, ReLU, Linear)`` (float64), the starting
            parameters of training (left unchanged).
        X, y: training inputs (N, d) and int64 labels (N,) in [0, K).
        X_test, y_test: test inputs (M, d) and labels (M,).
        k: the starting k; k_max: the slider's end, an integer in [1, batch_size].
        eps: the L-inf radius of the "features" threat, >= 0.
        epochs, lr, batch_size, seed: the training run (``batch_size`` None: full batch, so k counts
            poisoned points of the whole training set).
        figsize: the picture's size in inches.

    Returns:
        A :class:`CertifiedPoisoningExplorer` (an ``ipywidgets.VBox``); display it in a notebook.

    Raises:
        ArgumentError: for a count or radius out of range; ValueError as ``agt_train``.

    Examples:
        >>> X = torch.tensor([[0.0, 0.1], [0.1, 0.0], [0.9, 1.0], [1.0, 0.9]], dtype=torch.float64)
        >>> y = torch.tensor([0, 0, 1, 1])
        >>> explorer = certified_poisoning_explorer(nn.Linear(2, 2).double(), X, y, X, y, k_max=2)
        >>> explorer.k.value = 2  # bounds the run again and redraws
        >>> len(explorer.curves["label flips"])
        3
    """
    eps = _checks.number(eps, "eps", ge=0)
    epochs = _checks.integer(epochs, "epochs", ge=1)
    lr = _checks.number(lr, "lr", gt=0)
    batch_size = len(y) if batch_size is None else _checks.integer(batch_size, "batch_size", ge=1, le=len(y))
    k_max = _checks.integer(k_max, "k_max", ge=1, le=batch_size)
    k = _checks.integer(k, "k", ge=0, le=k_max)
    seed = _checks.integer(seed, "seed", ge=0)
    schedule = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    ct.agt_train(model, X, y, k=k_max, eps=eps, **schedule)  # checks the model and data before any drawing
    margin_bounds(model, *ct.agt_train(model, X, y, k=0, eps=0.0, **schedule), X_test, y_test)
    return CertifiedPoisoningExplorer(model, X, y, X_test, y_test, k=k, k_max=k_max, eps=eps, schedule=schedule,
                                      figsize=figsize)
