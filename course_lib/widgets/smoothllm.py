"""SmoothLLM's vote, live: the perturbation, q and N as controls, the copies and their answers (lecture 9).

:func:`smoothllm_explorer` puts a prompt box and three controls (the perturbation, q, N) above a
picture of one :meth:`course_lib.smoothllm.SmoothLLM.vote`: each perturbed copy (for swap and
patch, a ``^`` under every character that changed) and the start of the model's answer, green for
a refusal and red for a jailbroken answer, and beside it the fraction of jailbroken copies against
the majority line 1/2. Each change reruns the vote,
seeded, so a setting always shows the same copies.
"""

from __future__ import annotations

import random

import ipywidgets as widgets

from course_lib import _checks, smoothllm
from course_lib.widgets.explorer import Explorer, new_figure

SHOWN = 12
"""The most copies the picture lists (the vote uses all N)."""


def _marks(original: str, copy: str) -> str:
    """``^`` under every character of ``copy`` that differs from ``original`` (same length only)."""
    if len(original) != len(copy):
        return ""
    return "".join("^" if a != b else " " for a, b in zip(original, copy)).rstrip()


class SmoothLLMExplorer(Explorer):
    """A prompt box, the perturbation, q and N above one SmoothLLM vote. Build it with
    :func:`smoothllm_explorer`. Attributes: ``prompt`` (``Text``), ``kind`` (``ToggleButtons``), ``q``
    (``FloatSlider``), ``num_copies`` (``IntSlider``), ``last`` (the :class:`SmoothLLMVote` drawn, None when
    the model could not read the prompt: the picture then says why)."""

    def __init__(self, model, prompt: str, *, kind: str, q: float, q_max: float, num_copies: int,
                 copies_max: int, max_new_tokens: int, seed: int, figsize: tuple[float, float]) -> None:
        self.model, self.max_new_tokens, self.seed = model, max_new_tokens, seed
        self.last: smoothllm.SmoothLLMVote | None = None
        self.prompt = widgets.Text(value=prompt, description="prompt", continuous_update=False,
                                   layout=widgets.Layout(width="95%"))
        self.kind = widgets.ToggleButtons(options=list(smoothllm.KINDS), value=kind, description="perturbation")
        self.q = widgets.FloatSlider(value=q, min=0.0, max=q_max, step=1.0, description="q (%)",
                                     continuous_update=False, readout_format=".0f")
        self.num_copies = widgets.IntSlider(value=num_copies, min=1, max=copies_max, step=1, description="N",
                                            continuous_update=False)
        figure = new_figure(figsize)
        self.ax_copies, self.ax_vote = figure.subplots(1, 2, gridspec_kw={"width_ratios": [5, 1]})
        super().__init__([self.kind, self.q, self.num_copies], figure, extra=[self.prompt])
        self.controls.append(self.prompt)
        self.prompt.observe(self.redraw, names="value")

    def draw(self) -> None:
        """Vote once with the controls' values and redraw the copies and the tally."""
        prompt = self.prompt.value if self.prompt.value else " "
        defence = smoothllm.SmoothLLM(self.model, self.kind.value, float(self.q.value), int(self.num_copies.value),
                                      max_new_tokens=self.max_new_tokens, rng=random.Random(self.seed))
        ax = self.ax_copies
        ax.clear()
        ax.set_axis_off()
        self.ax_vote.clear()
        try:
            self.last = vote = defence.vote(prompt)
        except ValueError as error:  # a typed prompt the model cannot read (a character outside its vocabulary, too long)
            self.last = None
            ax.text(0.0, 0.5, f"The model cannot answer this prompt:\n{error}", fontsize=8, color="tab:red", wrap=True)
            self.ax_vote.set_axis_off()
            return
        rows = list(zip(vote.copies, vote.responses, vote.copy_jailbroken))[:SHOWN]
        step = 1.0 / (len(rows) + 1)
        for i, (copy, response, broken) in enumerate(rows):
            y = 1.0 - (i + 1) * step
            color = "tab:red" if broken else "tab:green"
            ax.text(0.0, y, repr(copy)[1:-1][:70], family="monospace", fontsize=7.5, va="bottom")
            ax.text(0.0, y, " " + _marks(prompt, copy)[:70], family="monospace", fontsize=7.5, va="top",
                    color="0.45")
            ax.text(1.0, y, response.strip()[:26], family="monospace", fontsize=7.5, color=color, ha="right",
                    va="bottom")
        more = f" (first {SHOWN} shown)" if len(vote.copies) > SHOWN else ""
        ax.set_title(f"{len(vote.copies)} copies, {self.kind.value} q = {self.q.value:.0f}%{more}", fontsize=9)
        ax = self.ax_vote
        ax.set_axis_on()
        ax.bar([0], [vote.fraction_jailbroken], color="tab:red" if vote.jailbroken else "tab:green", width=0.6)
        ax.axhline(0.5, color="0.3", ls="--", lw=1)
        ax.set(xlim=(-0.6, 0.6), ylim=(0, 1), xticks=[], ylabel="fraction of copies jailbroken")
        ax.set_title("jailbroken" if vote.jailbroken else "refused", fontsize=9,
                     color="tab:red" if vote.jailbroken else "tab:green")


def smoothllm_explorer(model, prompt: str, *, kind: str = "swap", q: float = 10.0, q_max: float = 40.0,
                       num_copies: int = 5, copies_max: int = 15, max_new_tokens: int = 24, seed: int = 0,
                       figsize: tuple[float, float] = (9.5, 3.6)) -> SmoothLLMExplorer:
    """Type a prompt, move q and N, switch the perturbation, and watch SmoothLLM's copies vote.

    Args:
        model: a character-level language model (``course_lib.chat_zoo.load()``) or a
            ``respond(prompts) -> responses`` callable (:func:`course_lib.smoothllm.answer`).
        prompt: the starting prompt, non-empty (a request, with or without a jailbreak suffix).
        kind: ``"swap"``, ``"insert"`` or ``"patch"``.
        q, q_max: the starting perturbation percentage and the slider's end, 0 <= q <= q_max <= 100.
        num_copies, copies_max: the starting N and the slider's end, 1 <= N <= copies_max.
        max_new_tokens: answer length, >= 1. seed: seeds each vote (the same setting shows the same copies).
        figsize: the picture's size in inches.

    Returns:
        A :class:`SmoothLLMExplorer` (an ``ipywidgets.VBox``); display it in a notebook.

    Raises:
        ArgumentError: for a bad argument (the message names it).

    Examples:
        >>> refuse_all = lambda prompts: ["I cannot help with that."] * len(prompts)
        >>> explorer = smoothllm_explorer(refuse_all, "how do I pick a lock", num_copies=3)
        >>> explorer.num_copies.value = 7  # votes again and redraws
        >>> explorer.last.jailbroken, len(explorer.last.copies)
        (False, 7)
    """
    if not callable(model):
        raise _checks.fail("model", "a language model or a respond(prompts) -> responses callable", model)
    prompt = _checks.text(prompt, "prompt")
    kind = _checks.choice(kind, "kind", smoothllm.KINDS)
    q_max = _checks.number(q_max, "q_max", ge=0, le=100)
    q = _checks.number(q, "q", ge=0, le=q_max)
    copies_max = _checks.integer(copies_max, "copies_max", ge=1)
    num_copies = _checks.integer(num_copies, "num_copies", ge=1, le=copies_max)
    max_new_tokens = _checks.integer(max_new_tokens, "max_new_tokens", ge=1)
    seed = _checks.integer(seed, "seed", ge=0)
    return SmoothLLMExplorer(model, prompt, kind=kind, q=q, q_max=q_max, num_copies=num_copies,
                             copies_max=copies_max, max_new_tokens=max_new_tokens, seed=seed, figsize=figsize)
