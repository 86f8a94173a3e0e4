"""k-instability of a jailbreak suffix: measured on a model, and built into a toy one (lecture 9).

SmoothLLM's guarantee (:func:`course_lib.smoothllm.defense_success_probability`) rests on one
hypothesis about the attack: the suffix S is **k-unstable**, i.e. for the goal G,

    every S' with Hamming distance d_H(S, S') >= k makes [G; S'] fail (the model refuses).

Nothing in the defence checks this; it is a property of the model and of the suffix the attacker
found. This module measures it, and gives a model for which it holds by construction:

* :func:`change_characters` moves a string to Hamming distance exactly j (j positions, each given
  a different printable character);
* :func:`suffix_survival` is the measurement: the fraction of prompts still jailbroken when j
  random suffix characters are changed, for each j. A suffix is k-unstable on a prompt when the
  fraction is 0 for every j >= k (random changes can only refute k-instability, never prove it:
  there are C(m_S, j) 99^j suffixes at distance j);
* :class:`KUnstableModel` answers "Sure, here is" exactly when the prompt ends within Hamming
  distance k - 1 of a given suffix, so the guarantee's hypothesis holds with equality and
  SmoothLLM's measured success must match the formula (with ``changed=True``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from course_lib import _checks
from course_lib.language_model import COMPLIANCE_PREFIX, REFUSAL
from course_lib.smoothllm import ALPHABET, REFUSAL_PREFIXES, answer, is_jailbroken

__all__ = ["KUnstableModel", "change_characters", "hamming", "suffix_survival"]


def hamming(a: str, b: str) -> int:
    """The number of positions where two strings of the same length differ.

    Raises:
        ArgumentError: ``a`` or ``b`` not a string, or their lengths differ.
    """
    a, b = _checks.text(a, "a", empty=True), _checks.text(b, "b", empty=True)
    if len(a) != len(b):
        raise _checks.ArgumentError(f"a and b must have the same length, got {len(a)} and {len(b)}")
    return sum(x != y for x, y in zip(a, b))


def change_characters(text: str, count: int, *, rng: random.Random) -> str:
    """``text`` with ``count`` distinct positions, drawn uniformly, each replaced by a printable
    character different from the one there: the result is at Hamming distance exactly ``count``.

    Raises:
        ArgumentError: ``text`` not a string, ``count`` outside [0, len(text)], ``rng`` not a
            ``random.Random``.
    """
    text = _checks.text(text, "text", empty=True)
    count = _checks.integer(count, "count", ge=0, le=len(text))
    if not isinstance(rng, random.Random):
        raise _checks.fail("rng", "a random.Random", rng)
    chars = list(text)
    for i in rng.sample(range(len(chars)), count):
        chars[i] = rng.choice([c for c in ALPHABET if c != chars[i]])
    return "".join(chars)


def suffix_survival(model: Callable[[list[str]], list[str]], goals: Sequence[str], suffix: str,
                    changes: Sequence[int], *, trials: int = 1, rng: random.Random | None = None,
                    max_new_tokens: int = 16,
                    refusal_prefixes: Sequence[str] = REFUSAL_PREFIXES) -> dict[int, float]:
    """The fraction of prompts ``goal + " " + S'`` still jailbroken, S' at Hamming distance j from ``suffix``.

    For each j in ``changes``, each goal is tried ``trials`` times, each time with its own random
    S' (:func:`change_characters`); all of one j's prompts go to the model in one batched call.

    Args:
        model: a ``respond(prompts) -> responses`` callable or a character-level language model
            (:func:`course_lib.smoothllm.answer`).
        goals: non-empty list of requests (without suffix).
        suffix: the jailbreak suffix, non-empty.
        changes: the distances j to try, each in [0, len(suffix)].
        trials: random suffixes per goal and j, >= 1.
        rng: the ``random.Random`` behind the changes (``None``: ``random.Random(0)``).

    Returns:
        ``{j: fraction in [0, 1]}``, in the order of ``changes``.
    """
    goals = _checks.texts(goals, "goals")
    suffix = _checks.text(suffix, "suffix")
    if isinstance(changes, (int, str)) or not changes:
        raise _checks.fail("changes", "a non-empty list of integers in [0, len(suffix)]", changes)
    changes = [_checks.integer(j, "changes", ge=0, le=len(suffix)) for j in changes]
    trials = _checks.integer(trials, "trials", ge=1)
    rng = random.Random(0) if rng is None else rng
    survival = {}
    for j in changes:
        prompts = [f"{g} {change_characters(suffix, j, rng=rng)}" for g in goals for _ in range(trials)]
        responses = answer(model, prompts, max_new_tokens=max_new_tokens)
        survival[j] = sum(is_jailbroken(r, refusal_prefixes) for r in responses) / len(responses)
    return survival


class KUnstableModel:
    """A toy assistant jailbroken exactly by the prompts that end within distance k - 1 of a suffix.

    ``model(prompts)`` answers ``"Sure, here is ..."`` to a prompt whose last ``len(suffix)``
    characters are at Hamming distance < k from ``suffix``, and :data:`REFUSAL` to every other
    prompt: the suffix is k-unstable (and not (k+1)-unstable) on every goal, the guarantee's
    hypothesis with equality, and the goal itself is never enough.

    Args:
        suffix: the jailbreak suffix, non-empty.
        k: its instability, in [1, len(suffix)].
    """

    def __init__(self, suffix: str, k: int) -> None:
        self.suffix = _checks.text(suffix, "suffix")
        self.k = _checks.integer(k, "k", ge=1, le=len(self.suffix))

    def jailbroken(self, prompt: str) -> bool:
        """Whether ``prompt`` ends within Hamming distance k - 1 of the suffix."""
        prompt = _checks.text(prompt, "prompt")
        tail = prompt[-len(self.suffix):]
        return len(tail) == len(self.suffix) and hamming(tail, self.suffix) < self.k

    def __call__(self, prompts: list[str]) -> list[str]:
        return [f"{COMPLIANCE_PREFIX} what you asked for." if self.jailbroken(p) else REFUSAL for p in prompts]
