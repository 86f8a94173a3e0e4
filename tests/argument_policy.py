"""The argument-check policy (:mod:`course_lib._checks`), tried on one parameter of one function.

Every public function that takes a count or a radius is called with that parameter given as
a Python number, a NumPy scalar and a 0-d tensor (all accepted, with the same result as the
Python number), and as a bool and a string (both refused, with a message naming it).
Test files list their cases and call :func:`check_policy`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from course_lib._checks import ArgumentError


def forms(value: int | float) -> list[Any]:
    """The accepted spellings of one valid value: Python, NumPy and a 0-d tensor."""
    if isinstance(value, int):
        return [value, np.int64(value), np.int32(value), torch.tensor(value)]
    return [value, np.float64(value), np.float32(value), torch.tensor(value, dtype=torch.float64)]


def refused(value: int | float) -> list[Any]:
    """Spellings that must be refused: a bool and a string (and 3.0 for a count)."""
    bad: list[Any] = [True, False, str(value)]
    if isinstance(value, int):
        bad.append(float(value))
    return bad


def check_policy(call: Callable[[Any], Any], name: str, value: int | float,
                 same: Callable[[Any, Any], bool] | None = None) -> None:
    """``call(v)`` passes ``v`` as the parameter ``name``; ``value`` is a valid Python value.

    Accepted forms must not raise (and, with ``same``, give a result ``same`` as the Python
    value's); refused forms must raise :class:`ArgumentError` naming ``name``.
    """
    reference = call(value)
    sentinel = "".join(str(value))  # a string object of its own: found by identity below
    for v in forms(value)[1:]:
        out = call(v)
        if same is not None:
            assert same(reference, out), f"{name}={v!r} ({type(v).__name__}) gave another result"
    for v in refused(value):
        with pytest.raises(ArgumentError, match=rf"\b{name}\b"):
            call(v)
    if os.environ.get(RECORD):
        with pytest.raises(ArgumentError, match=rf"\b{name}\b"), _recording(name, sentinel):
            call(sentinel)


# Where tests/test_argument_policy.py asks which public functions the cases reach: a JSON line
# per course_lib function entered with the refused value bound to the parameter ``name``.
RECORD = "COURSE_POLICY_RECORD"


class _recording:
    def __init__(self, name: str, sentinel: str) -> None:
        self.name, self.sentinel, self.seen = name, sentinel, set()

    def _profile(self, frame, event, arg):
        if event == "call" and frame.f_globals.get("__name__", "").startswith("course_lib"):
            if frame.f_locals.get(self.name) is self.sentinel:
                qualname = frame.f_code.co_qualname
                if "<locals>" in qualname and frame.f_code.co_name == "__init__" and "self" in frame.f_locals:
                    qualname = f"{type(frame.f_locals['self']).__qualname__}.__init__"  # a dataclass's
                self.seen.add(f"{frame.f_globals['__name__']}.{qualname}")

    def __enter__(self):
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)
        with open(os.environ[RECORD], "a") as f:
            for where in sorted(self.seen):
                f.write(json.dumps([where, self.name]) + "\n")
        return False
