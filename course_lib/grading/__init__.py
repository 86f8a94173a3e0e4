"""What a TA runs: the autograde pipeline, its workers and sandbox, release and validate.

* ``python -m course_lib.grading``: autograde a class (:mod:`~course_lib.grading.pipeline`;
  ``make grade``): the submissions unpacked, checked and repaired
  (:mod:`~course_lib.grading.submissions`), each run in a sandbox
  (:mod:`~course_lib.grading.sandbox`) driven by a pool (:mod:`~course_lib.grading.pool`) of
  trusted workers (:mod:`~course_lib.grading.worker`)
* ``python -m course_lib.grading.release``: regenerate ``assignments/`` (``make release``)
* ``python -m course_lib.grading.validate NOTEBOOK``: a student's check (``make validate``)
* :mod:`~course_lib.grading.feedback`: what the feedback HTML hides; ``make feedback``
* after a run, ``OUT`` is an nbgrader course directory (:mod:`~course_lib.grading.course`;
  ``make formgrade``) whose hand-entered grades survive reruns
  (:mod:`~course_lib.grading.gradebook`), with due dates and late penalties
  (:mod:`~course_lib.grading.late`), ``grades.csv`` (:mod:`~course_lib.grading.grades`) and
  an LMS export (:mod:`~course_lib.grading.export`; ``make export``)

This package imports nothing heavy itself: the sandbox's processes import their own
modules below it and should not pay for nbgrader.
"""

from __future__ import annotations

import importlib

_FROM_PIPELINE = ("CSV_COLUMNS", "GradeRow", "GradingError", "grade_submissions", "main")
__all__ = [*_FROM_PIPELINE, "course", "export", "feedback", "gradebook", "grades", "late", "pipeline", "pool",
           "release", "sandbox", "submissions", "validate", "worker"]


def __getattr__(name: str):
    if name in _FROM_PIPELINE:
        return getattr(importlib.import_module("course_lib.grading.pipeline"), name)
    if name in __all__:
        return importlib.import_module(f"course_lib.grading.{name}")
    raise AttributeError(f"module 'course_lib.grading' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
