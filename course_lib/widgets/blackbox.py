"""A query-budget slider over a black-box attack, for live demos (lecture 8).

:func:`query_explorer` puts three controls above :func:`course_lib.widgets.attacks.plot_attack`'s
picture (the clean digits, the perturbations, the attacked digits with predictions): the query
budget per image (a 1-2-5 ladder up to ``max_queries``), the L-inf radius, and the attack, the
Square Attack or NES (:mod:`course_lib.blackbox`). Each release of a control reruns the attack,
seeded, from the clean inputs. The attack only queries the model's scores; the title says how
many digits survive, how many queries each one the attack broke took, and how many were wrong
before the attack.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from torch import Tensor, nn

from course_lib import _checks, blackbox
from course_lib.widgets.attacks import _check_clean_batch, plot_attack, predict
from course_lib.widgets.explorer import Explorer, eps_slider, new_figure

ATTACKS = ("Square", "NES")


def budget_ladder(max_queries: int, *, include: Sequence[int] = ()) -> list[int]:
    """The budgets a slider offers: 1, 2, 5, 10, 20, 50, ... up to ``max_queries``, which is
    always included, as is every value of ``include`` (each in [1, max_queries]).

    Examples:
        >>> budget_ladder(300)
        [1, 2, 5, 10, 20, 50, 100, 200, 300]
        >>> budget_ladder(100, include=[30])
        [1, 2, 5, 10, 20, 30, 50, 100]
    """
    max_queries = _checks.integer(max_queries, "max_queries", ge=1)
    ladder, decade = {max_queries}, 1
    while decade <= max_queries:
        ladder |= {m * decade for m in (1, 2, 5) if m * decade <= max_queries}
        decade *= 10
    for q in include:
        ladder.add(_checks.integer(q, "queries", ge=1, le=max_queries))
    return sorted(ladder)


class QueryExplorer(Explorer):
    """A query-budget slider, an eps slider and a Square/NES switch above :func:`plot_attack`'s picture.

    Build it with :func:`query_explorer`. Attributes:

    * ``queries``: the ``SelectionSlider`` of budgets (model queries per image);
      ``eps``: the ``FloatSlider`` (L-inf radius); ``attack``: the ``ToggleButtons``.
    * ``figure``, ``axes``, ``image``: the picture, its (3, N) Axes and the PNG widget.
    * ``x_adv``: the inputs last drawn; ``used``: int64 (N,), the queries each image took (an
      image misclassified before the attack takes one, the check); ``correct``: how many of
      the N the model still classifies correctly.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, *, queries: int, max_queries: int, eps: float,
                 eps_max: float, attack: str, seed: int, classes: Sequence[str] | None,
                 figsize: tuple[float, float]) -> None:
        self.model, self.x, self.y, self.seed, self.classes = model, x.detach(), y, seed, classes
        self.queries = widgets.SelectionSlider(options=budget_ladder(max_queries, include=[queries]), value=queries,
                                               description="queries", continuous_update=False)
        self.eps = eps_slider(eps, eps_max)
        self.attack = widgets.ToggleButtons(options=list(ATTACKS), value=attack)
        figure = new_figure(figsize)
        self.axes = np.array(figure.subplots(3, x.shape[0], squeeze=False), dtype=object)
        self.x_adv: Tensor = x.detach().clone()
        self.used = torch.zeros(x.shape[0], dtype=torch.int64)
        self.correct = 0
        super().__init__([self.queries, self.eps, self.attack], figure)

    def run_attack(self, queries: int, eps: float, attack: str) -> tuple[Tensor, Tensor]:
        """``(x_adv, queries_used)`` of the attack with this budget and radius, from a generator
        seeded with ``seed`` (same controls, same picture). NES takes its defaults (steps of eps / 4,
        10 antithetic pairs a round); Square its ``p_init = 0.05``, chosen for ImageNet, which
        on 28x28 digits is a square of 6x6 pixels."""
        queries = _checks.integer(queries, "queries", ge=1)
        eps = _checks.number(eps, "eps", ge=0)
        attack = _checks.choice(attack, "attack", ATTACKS)
        gen = torch.Generator(device=self.x.device).manual_seed(self.seed)
        run = blackbox.square_attack if attack == "Square" else blackbox.nes_attack
        with torch.no_grad():
            return run(self.model, self.x, self.y, eps, queries=queries, generator=gen)

    def draw(self) -> None:
        """Rerun the attack with the controls' values and draw its picture."""
        queries, eps, attack = int(self.queries.value), float(self.eps.value), str(self.attack.value)
        self.x_adv, self.used = self.run_attack(queries, eps, attack)
        for ax in self.axes.flat:
            ax.clear()
        plot_attack(self.model, self.x, self.x_adv, self.y, classes=self.classes, axes=self.axes)
        pred, _ = predict(self.model, self.x_adv)
        wrong_before = predict(self.model, self.x)[0] != self.y
        broken = (pred != self.y) & ~wrong_before
        self.correct = int((pred == self.y).sum())
        took = (f"; {int(broken.sum())} broken, after {', '.join(str(int(q)) for q in self.used[broken].sort().values)} "
                "queries" if broken.any() else "")
        before = f" ({int(wrong_before.sum())} wrong before the attack)" if wrong_before.any() else ""
        self.figure.suptitle(f"{attack}, eps = {eps:.3f}, {queries} queries per image: {self.correct} of "
                             f"{len(self.y)} still correct{took}{before}", fontsize="medium")


def query_explorer(model: nn.Module, x: Tensor, y: Tensor, *, queries: int = 100, max_queries: int = 1000,
                   eps: float = 0.3, eps_max: float = 0.5, attack: str = "Square", seed: int = 0,
                   classes: Sequence[str] | None = None,
                   figsize: tuple[float, float] | None = None) -> QueryExplorer:
    """A query-budget slider over pictures of a black-box attack (Square or NES, L-inf).

    Args:
        model: maps x (N, C, H, W) to scores (N, K); only queried, in eval mode (its mode restored).
        x: a few clean inputs (N, C, H, W) in [0, 1], 1 <= N <= 12, on the model's device.
        y: int64 true labels (N,).
        queries: the initial budget per image, in [1, max_queries].
        max_queries: the slider's largest budget, >= 1; the slider offers 1, 2, 5, 10, 20, ...
        eps: initial L-inf radius, in [0, eps_max].
        eps_max: the eps slider's largest radius, > 0.
        attack: initial attack, ``"Square"`` or ``"NES"``.
        seed: seeds the attack's random draws.
        classes: a name per class for the titles.
        figsize: the picture's size in inches; default 1.4 inches per column, 4.6 high.

    Returns:
        A :class:`QueryExplorer` (an ``ipywidgets.VBox``); display it in a notebook.

    Raises:
        ValueError: for a bad ``x``/``y``, ``max_queries < 1``, ``queries`` outside [1, max_queries],
            ``eps_max <= 0``, ``eps`` outside [0, eps_max], or an unknown ``attack``.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> x, y = torch.rand(2, 1, 8, 8), torch.tensor([3, 7])
        >>> explorer = query_explorer(model, x, y, queries=20, max_queries=50, eps=0.1)
        >>> explorer.queries.value = 50  # the attack reruns with the new budget
        >>> bool((explorer.x_adv - x).abs().max() <= 0.1 + 1e-6), bool((explorer.used <= 50).all())
        (True, True)
    """
    _check_clean_batch(x, y)
    max_queries = _checks.integer(max_queries, "max_queries", ge=1)
    queries = _checks.integer(queries, "queries", ge=1, le=max_queries)
    eps_max = _checks.number(eps_max, "eps_max", gt=0)
    eps = _checks.number(eps, "eps", ge=0, le=eps_max)
    attack = _checks.choice(attack, "attack", ATTACKS)
    seed = _checks.integer(seed, "seed", ge=0)
    n = x.shape[0]
    return QueryExplorer(model, x, y, queries=queries, max_queries=max_queries, eps=eps, eps_max=eps_max,
                         attack=attack, seed=seed, classes=classes, figsize=figsize or (1.4 * n, 4.6))
