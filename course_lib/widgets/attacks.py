"""Pictures of adversarial examples, and an epsilon slider for live demos (lecture 2).

:func:`plot_attack` draws, for a few examples, the clean input ``x``, the perturbation
``delta = x_adv - x`` and the adversarial input ``x + delta``, with the model's prediction
and confidence above each image (red when it is wrong).

:func:`eps_explorer` puts an epsilon slider and an FGSM/PGD switch above that picture and
reruns the attack (:mod:`course_lib.attacks`) each time the slider is released. As in
:mod:`course_lib.widgets`, the picture is a matplotlib ``Figure`` outside pyplot shown
through an ``ipywidgets.Image``, so it works with any backend and ``explorer.image.value``
is the static version of the demo.

Names follow :mod:`course_lib.attacks`: ``eps`` the L-inf radius, ``delta`` the perturbation,
``alpha`` the PGD step (here ``eps / 4``).
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor, nn

from course_lib import _checks, attacks
from course_lib.models import evaluating
from course_lib.widgets.explorer import Explorer, eps_slider, new_figure

ATTACKS = ("FGSM", "PGD")
MAX_EXAMPLES = 12


def predict(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The model's predicted class and its softmax probability, in eval mode, without gradients.

    Args:
        model: maps x (N, C, H, W) to logits (N, K).
        x: inputs (N, C, H, W).

    Returns:
        ``(pred, conf)``: int64 (N,) and float (N,) in [0, 1], on x's device. The model's
        train/eval mode is restored.

    Examples:
        >>> pred, conf = predict(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), torch.rand(2, 1, 2, 2))
        >>> pred.dtype, bool(((conf > 0) & (conf <= 1)).all())
        (torch.int64, True)
    """
    with evaluating(model, grad=False):
        probs = model(x).softmax(1)
    conf, pred = probs.max(1)
    return pred, conf


def _image(t: Tensor) -> np.ndarray:
    """(C, H, W) -> what ``imshow`` takes: (H, W) for one channel, (H, W, C) for colour."""
    t = t.detach().to("cpu", torch.float32)
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


def _label(classes: Sequence[str] | None, k: int) -> str:
    return str(classes[k]) if classes is not None else str(k)


def _check_batch(x: Tensor, x_adv: Tensor | None, y: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or not 1 <= x.shape[0] <= MAX_EXAMPLES:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be images (N, C, H, W) with 1 <= N <= {MAX_EXAMPLES}, got {shape}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"x must have 1 (grey) or 3 (colour) channels, got shape {tuple(x.shape)}")
    if x_adv is not None and (not isinstance(x_adv, Tensor) or x_adv.shape != x.shape):
        shape = tuple(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__
        raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, got {shape}")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 labels of shape ({x.shape[0]},), got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")


def _check_clean_batch(x: Tensor, y: Tensor) -> None:
    """What an explorer attacks: images as :func:`_check_batch` wants them, with values in [0, 1]."""
    _check_batch(x, None, y)
    if not (x.min() >= 0 and x.max() <= 1):  # also catches nan
        raise ValueError("x must lie in [0, 1]; undo normalization first")


def plot_attack(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, *,
                classes: Sequence[str] | None = None, axes: np.ndarray | None = None,
                figsize: tuple[float, float] | None = None) -> np.ndarray:
    """Clean inputs, perturbations and adversarial inputs, with predictions, one column each.

    Row 0 shows ``x`` titled ``label -> prediction (confidence)``; row 1 ``delta = x_adv - x``
    on a blue-white-red scale symmetric about 0 (white: unchanged; the same scale for every
    column, the largest ``|delta|``), titled with its L-inf and L2 norms; row 2 ``x_adv``
    titled with its prediction and confidence. A title is red when the prediction is wrong.

    Args:
        model: maps x (N, C, H, W) to logits (N, K).
        x: clean inputs (N, C, H, W) in [0, 1], 1 <= N <= 12, C = 1 or 3.
        x_adv: adversarial inputs, x's shape.
        y: int64 true labels (N,).
        classes: a name per class for the titles; default the class index.
        axes: a (3, N) array of Axes to draw on; default a new figure.
        figsize: size of the new figure; default 1.5 inches per column, 4.8 high.

    Returns:
        The (3, N) array of Axes; ``axes[r, i].get_title()`` holds the texts above.

    Raises:
        ValueError: if shapes do not match or ``axes`` is not (3, N).

    Examples:
        >>> from course_lib.attacks import fgsm
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> x, y = torch.rand(2, 1, 8, 8), torch.tensor([3, 7])
        >>> axes = plot_attack(model, x, fgsm(model, x, y, eps=0.1), y)
        >>> axes.shape
        (3, 2)
    """
    _check_batch(x, x_adv, y)
    n = x.shape[0]
    if axes is None:
        import matplotlib.pyplot as plt  # only when the caller gave no Axes

        _, axes = plt.subplots(3, n, figsize=figsize or (1.5 * n, 4.8), squeeze=False)
    axes = np.asarray(axes, dtype=object)
    if axes.shape != (3, n) or not all(isinstance(ax, Axes) for ax in axes.flat):
        raise ValueError(f"axes must be a (3, {n}) array of Axes, got shape {axes.shape}")
    pred, conf = predict(model, x)
    pred_adv, conf_adv = predict(model, x_adv)
    delta = (x_adv - x).detach()
    scale = float(delta.abs().max()) or 1.0  # one scale for the whole row: sizes compare across columns
    for i in range(n):
        ax_x, ax_d, ax_a = axes[:, i]
        ax_x.imshow(_image(x[i]), cmap="gray", vmin=0, vmax=1)
        ok = int(pred[i]) == int(y[i])
        ax_x.set_title(f"{_label(classes, int(y[i]))} -> {_label(classes, int(pred[i]))} ({float(conf[i]):.0%})",
                       fontsize="small", color="black" if ok else "red")
        if x.shape[1] == 1:
            ax_d.imshow(_image(delta[i]), cmap="bwr", vmin=-scale, vmax=scale)
        else:  # colour: grey 0.5 is "unchanged"
            ax_d.imshow(np.clip(0.5 + _image(delta[i]) / (2 * scale), 0, 1))
        d = delta[i].flatten()
        ax_d.set_title(f"L-inf {float(d.abs().max()):.2f}, L2 {float(d.norm()):.2f}", fontsize="x-small")
        ax_a.imshow(_image(x_adv[i]), cmap="gray", vmin=0, vmax=1)
        ok_adv = int(pred_adv[i]) == int(y[i])
        ax_a.set_title(f"{_label(classes, int(pred_adv[i]))} ({float(conf_adv[i]):.0%})",
                       fontsize="small", color="black" if ok_adv else "red")
        for ax in (ax_x, ax_d, ax_a):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("x")
    axes[1, 0].set_ylabel("delta")
    axes[2, 0].set_ylabel("x + delta")
    return axes


class EpsExplorer(Explorer):
    """An epsilon slider and an FGSM/PGD switch above :func:`plot_attack`'s picture.

    Build it with :func:`eps_explorer`. Attributes:

    * ``eps``: the ``FloatSlider`` (L-inf radius); ``attack``: the ``ToggleButtons``
      (``"FGSM"`` or ``"PGD"``); set ``.value`` to move them from code.
    * ``image``: the ``ipywidgets.Image`` showing the current picture (PNG bytes).
    * ``figure``, ``axes``: the matplotlib Figure and its (3, N) Axes.
    * ``x_adv``: the adversarial inputs last drawn; ``correct``: how many of the N the
      model still classifies correctly.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, eps_max: float,
                 attack: str, steps: int, seed: int, classes: Sequence[str] | None,
                 figsize: tuple[float, float]) -> None:
        self.model, self.x, self.y = model, x.detach(), y
        self.steps, self.seed, self.classes = steps, seed, classes
        self.eps = eps_slider(eps, eps_max)
        self.attack = widgets.ToggleButtons(options=list(ATTACKS), value=attack)
        figure = new_figure(figsize)
        self.axes = np.array(figure.subplots(3, x.shape[0], squeeze=False), dtype=object)
        self.x_adv: Tensor = x.detach().clone()
        self.correct = 0
        super().__init__([self.eps, self.attack], figure)

    def run_attack(self, eps: float, attack: str) -> Tensor:
        """The adversarial inputs at radius ``eps``: FGSM, or PGD with ``steps`` steps of
        ``eps / 4`` from a random start seeded with ``seed`` (same slider, same picture)."""
        eps = _checks.number(eps, "eps", ge=0)
        if eps == 0:
            return self.x.clone()
        if attack == "FGSM":
            return attacks.fgsm(self.model, self.x, self.y, eps)
        gen = torch.Generator(device=self.x.device).manual_seed(self.seed)
        return attacks.pgd(self.model, self.x, self.y, eps, alpha=eps / 4, steps=self.steps,
                           generator=gen)

    def draw(self) -> None:
        """Rerun the attack with the widgets' values and draw its picture."""
        eps, attack = float(self.eps.value), str(self.attack.value)
        self.x_adv = self.run_attack(eps, attack)
        for ax in self.axes.flat:
            ax.clear()
        plot_attack(self.model, self.x, self.x_adv, self.y, classes=self.classes, axes=self.axes)
        pred, _ = predict(self.model, self.x_adv)
        self.correct = int((pred == self.y).sum())
        what = "FGSM" if attack == "FGSM" else f"PGD, {self.steps} steps of eps/4"
        self.figure.suptitle(f"{what}, eps = {eps:.3f}: {self.correct} of {len(self.y)} still correct",
                             fontsize="medium")


def eps_explorer(model: nn.Module, x: Tensor, y: Tensor, *, eps: float = 0.1, eps_max: float = 0.3,
                 attack: str = "PGD", steps: int = 20, seed: int = 0,
                 classes: Sequence[str] | None = None,
                 figsize: tuple[float, float] | None = None) -> EpsExplorer:
    """An epsilon slider over pictures of x, delta and x + delta (L-inf FGSM or PGD).

    Args:
        model: maps x (N, C, H, W) to logits (N, K); used in eval mode (its mode is restored).
        x: a few clean inputs (N, C, H, W) in [0, 1], 1 <= N <= 12, on the model's device.
        y: int64 true labels (N,).
        eps: initial L-inf radius, in [0, eps_max].
        eps_max: the slider's largest radius, > 0.
        attack: initial attack, ``"FGSM"`` or ``"PGD"``.
        steps: PGD steps (of size eps / 4), >= 1.
        seed: seeds PGD's random start.
        classes: a name per class for the titles.
        figsize: the picture's size in inches; default 1.4 inches per column, 4.6 high.

    Returns:
        An :class:`EpsExplorer` (an ``ipywidgets.VBox``); display it in a notebook.

    Raises:
        ValueError: for a bad ``x``/``y`` (shapes, dtype, outside [0, 1]), ``eps_max <= 0``,
            ``eps`` outside [0, eps_max], an unknown ``attack`` or ``steps < 1``.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> x, y = torch.rand(2, 1, 8, 8), torch.tensor([3, 7])
        >>> explorer = eps_explorer(model, x, y, eps=0.1, steps=2)
        >>> explorer.attack.value = "FGSM"  # the picture is redrawn
        >>> bool((explorer.x_adv - x).abs().max() <= 0.1 + 1e-6), 0 <= explorer.correct <= 2
        (True, True)
    """
    _check_clean_batch(x, y)
    eps_max = _checks.number(eps_max, "eps_max", gt=0)
    eps = _checks.number(eps, "eps", ge=0, le=eps_max)
    attack = _checks.choice(attack, "attack", ATTACKS)
    steps = _checks.integer(steps, "steps", ge=1)
    seed = _checks.integer(seed, "seed", ge=0)
    n = x.shape[0]
    return EpsExplorer(model, x, y, eps=eps, eps_max=eps_max, attack=attack, steps=steps,
                       seed=seed, classes=classes, figsize=figsize or (1.4 * n, 4.6))
