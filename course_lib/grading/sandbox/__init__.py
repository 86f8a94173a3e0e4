"""The grading sandbox: each student's notebook runs where it can reach nothing of the grader's.

* :mod:`~course_lib.grading.sandbox.bwrap`: one bubblewrap sandbox per notebook and its limits
  (:class:`Limits`)
* :mod:`~course_lib.grading.sandbox.zygote_client`: the grader's side of the zygote
  (:class:`Zygote`): one sandbox per worker that forks a child per submission
* :mod:`~course_lib.grading.sandbox.zygote`: the pre-imported Python inside one sandbox that
  forks a fresh, isolated child for each submission
* :mod:`~course_lib.grading.sandbox.namespaces`: the Linux namespaces such a child enters
* :mod:`~course_lib.grading.sandbox.execute`: what runs inside: execute the notebook, write
  the result
* :mod:`~course_lib.grading.sandbox.kernel`: the Jupyter kernel inside, under a memory cap

Public names load on first use: the processes inside a sandbox start as
``python -m course_lib.grading.sandbox.<module>`` and must not import the others first.
"""

from __future__ import annotations

import importlib

_FROM = {"Limits": "bwrap", "Zygote": "zygote_client", "ZygoteError": "zygote_client", "bwrap_caps_tmpfs": "bwrap",
         "bwrap_problem": "bwrap", "execute_notebook": "bwrap", "make_pids_cgroup": "bwrap",
         "notebook_imports": "bwrap", "process_cap": "bwrap", "copy_regular_files": "execute"}
_MODULES = ("bwrap", "execute", "kernel", "namespaces", "zygote", "zygote_client")
__all__ = sorted([*_FROM, *_MODULES])


def __getattr__(name: str):
    if name in _FROM:
        return getattr(importlib.import_module(f"course_lib.grading.sandbox.{_FROM[name]}"), name)
    if name in _MODULES:
        return importlib.import_module(f"course_lib.grading.sandbox.{name}")
    raise AttributeError(f"module 'course_lib.grading.sandbox' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
