"""Argument checks: one policy for the whole library, written once.

The policy:

* wherever a number is expected, a Python ``int``/``float``, a NumPy scalar and a 0-d
  tensor (or 0-d array) are all accepted, and converted to a Python ``float`` or ``int``;
* a ``bool`` is refused wherever a number is expected (``True`` is 1 to Python, but a
  flag passed where a count belongs is a bug), and so is a string, ``None``, a complex
  number or a tensor with more than one element;
* a count (:func:`integer`) must be integral: ``3.0`` is refused, so that a silently
  truncated ``2.5`` cannot happen;
* ``nan`` is never accepted, infinities only where a caller says ``finite=False``;
* every refusal is an :class:`ArgumentError` whose message names the argument, says what
  was expected and shows what came: ``"steps must be an integer >= 1, got 0"``.

:class:`ArgumentError` is both a ``ValueError`` and a ``TypeError`` (as NumPy's
``AxisError`` is both a ``ValueError`` and an ``IndexError``), so callers catching either
keep working whichever way an argument was wrong.

Examples:
    >>> import numpy as np, torch
    >>> number(np.float32(0.5), "eps", ge=0)
    0.5
    >>> integer(torch.tensor(3), "steps", ge=1)
    3
    >>> integer(True, "steps", ge=1)
    Traceback (most recent call last):
    ...
    course_lib._checks.ArgumentError: steps must be an integer >= 1, got True
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Collection
from typing import Any

# NumPy and torch are looked up, not imported: the grading tools use these checks and do
# not pay for importing torch. A value cannot be a tensor unless torch is already loaded.

__all__ = ["ArgumentError", "choice", "flag", "integer", "number", "optional_generator", "probability"]


class ArgumentError(TypeError, ValueError):
    """A bad argument: a ``ValueError`` and a ``TypeError`` at once; the message names it."""


def fail(name: str, expected: str, value: object) -> ArgumentError:
    """The one message format: ``"{name} must be {expected}, got {value!r}"``."""
    shown = repr(value)
    if len(shown) > 80:
        shown = f"{shown[:77]}..."
    return ArgumentError(f"{name} must be {expected}, got {shown}")


def _range_words(ge: float | None, gt: float | None, le: float | None, lt: float | None) -> str:
    def fmt(v: float) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    low = ("[", ge) if ge is not None else ("(", gt) if gt is not None else None
    high = ("]", le) if le is not None else (")", lt) if lt is not None else None
    if low is not None and high is not None:
        return f" in {low[0]}{fmt(low[1])}, {fmt(high[1])}{high[0]}"
    if low is not None:
        return f" {'>=' if low[0] == '[' else '>'} {fmt(low[1])}"
    if high is not None:
        return f" {'<=' if high[0] == ']' else '<'} {fmt(high[1])}"
    return ""


def _in_range(v: float, ge, gt, le, lt) -> bool:
    return ((ge is None or v >= ge) and (gt is None or v > gt)
            and (le is None or v <= le) and (lt is None or v < lt))


def _is_tensor(value: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_array(value: object) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def _scalar(value: object) -> object:
    """A 0-d tensor or array as a Python scalar; anything else unchanged."""
    if _is_tensor(value) and value.ndim == 0 and not value.is_complex() and str(value.dtype) != "torch.bool":
        return value.item()
    if _is_array(value) and value.ndim == 0 and value.dtype.kind in "iuf":
        return value.item()
    return value


def _is_bool(value: object) -> bool:
    if isinstance(value, bool) or (_is_tensor(value) and str(value.dtype) == "torch.bool"):
        return True
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, (np.bool_, np.ndarray)) and getattr(value, "dtype", None) == bool


def number(value: Any, name: str, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, finite: bool = True) -> float:
    """``value`` as a Python float, checked against the bounds given (``ge``: >=, ``gt``: >, ...).

    Raises:
        ArgumentError: a bool, a non-number, nan, an infinity (unless ``finite=False``) or a
            value out of range; the message names ``name``.
    """
    expected = f"{'a finite' if finite else 'a'} number{_range_words(ge, gt, le, lt)}"
    v = _scalar(value)
    if _is_bool(v) or not isinstance(v, numbers.Real):
        raise fail(name, expected, value)
    v = float(v)
    if math.isnan(v) or (finite and math.isinf(v)) or not _in_range(v, ge, gt, le, lt):
        raise fail(name, expected, value)
    return v


def integer(value: Any, name: str, *, ge: int | None = None, gt: int | None = None,
            le: int | None = None, lt: int | None = None) -> int:
    """``value`` as a Python int, checked against the bounds given; floats (even ``3.0``) refused.

    Raises:
        ArgumentError: a bool, a float, a non-number or a value out of range.
    """
    expected = f"an integer{_range_words(ge, gt, le, lt)}"
    v = _scalar(value)
    if _is_bool(v) or not isinstance(v, numbers.Integral):
        raise fail(name, expected, value)
    v = int(v)
    if not _in_range(v, ge, gt, le, lt):
        raise fail(name, expected, value)
    return v


def probability(value: Any, name: str, *, open_low: bool = True, open_high: bool = True) -> float:
    """A number in (0, 1) (by default); ``open_low=False`` admits 0, ``open_high=False`` admits 1."""
    return number(value, name, ge=None if open_low else 0, gt=0 if open_low else None,
                  le=None if open_high else 1, lt=1 if open_high else None)


def flag(value: Any, name: str) -> bool:
    """A Python or NumPy bool (a 0-d bool tensor too); ``0``, ``1`` and strings are refused."""
    v = value.item() if _is_tensor(value) and value.ndim == 0 and str(value.dtype) == "torch.bool" else value
    np = sys.modules.get("numpy")
    if not (isinstance(v, bool) or (np is not None and isinstance(v, np.bool_))):
        raise fail(name, "True or False", value)
    return bool(v)


def choice(value: Any, name: str, options: Collection[str]) -> str:
    """One of ``options`` (strings), compared exactly."""
    if not isinstance(value, str) or value not in options:
        raise fail(name, "one of " + ", ".join(repr(o) for o in options), value)
    return value


def text(value: Any, name: str, *, empty: bool = False) -> str:
    """A string, non-empty unless ``empty``."""
    if not isinstance(value, str) or (not value and not empty):
        raise fail(name, "a string" if empty else "a non-empty string", value)
    return value


def texts(value: Any, name: str) -> list[str]:
    """A non-empty list (or tuple) of non-empty strings, as a list."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise fail(name, "a non-empty list of non-empty strings", value)
    return [text(v, name) for v in value]


def optional_generator(value: Any, name: str = "generator"):
    """``None`` or a ``torch.Generator``."""
    torch = sys.modules.get("torch")
    if value is not None and not (torch is not None and isinstance(value, torch.Generator)):
        raise ArgumentError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value
