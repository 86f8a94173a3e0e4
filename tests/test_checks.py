"""course_lib._checks: the string checks (the number checks are tried by tests/test_argument_policy.py)."""

from __future__ import annotations

import pytest

from course_lib import _checks
from course_lib._checks import ArgumentError


def test_text_accepts_strings_and_refuses_the_rest_naming_the_argument():
    assert _checks.text("abc", "prompt") == "abc"
    assert _checks.text("", "prompt", empty=True) == ""
    for bad in ("", None, 3, b"abc", ["abc"]):
        with pytest.raises(ArgumentError, match=r"\bprompt\b.*non-empty string"):
            _checks.text(bad, "prompt")
    with pytest.raises(ArgumentError, match=r"\bprompt\b.*a string"):
        _checks.text(None, "prompt", empty=True)


def test_texts_is_a_non_empty_list_of_non_empty_strings():
    assert _checks.texts(("a", "b"), "goals") == ["a", "b"]
    for bad in ("ab", [], (), None, ["a", ""], ["a", 1], {"a"}):
        with pytest.raises(ArgumentError, match=r"\bgoals\b"):
            _checks.texts(bad, "goals")
