"""The house rules of ``course_lib``: three wings, small modules, one argument-check policy.

These are the structure's promises (README, "What is inside"), checked on the code itself.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import course_lib

pytestmark = pytest.mark.layout

LIB = Path(course_lib.__file__).resolve().parent
MODULES = sorted(p for p in LIB.rglob("*.py"))


def test_three_wings_top_level_holds_only_the_library():
    top = {p.stem for p in LIB.glob("*.py")}
    tooling = {"grading", "release", "validate", "feedback", "autograde_worker", "plots", "widgets"}
    assert not {m for m in top if m.startswith("sandbox") or m.endswith("_widgets") or m in tooling}
    assert (LIB / "widgets" / "__init__.py").exists() and (LIB / "grading" / "__init__.py").exists()
    assert (LIB / "grading" / "sandbox" / "__init__.py").exists()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(LIB)))
def test_no_module_over_450_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 450, f"{path.relative_to(LIB)} has {lines} lines: split it by concept"


def test_bool_guards_live_only_in_the_checks_module():
    guard = re.compile(r"isinstance\([a-z_]*, bool\)")
    found = [f"{p.relative_to(LIB)}:{i}" for p in MODULES if p.name != "_checks.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if guard.search(line)]
    assert not found, f"argument checks outside course_lib/_checks.py: {found}"


@pytest.mark.parametrize("old, new", sorted(course_lib.MOVED.items()))
def test_moved_modules_keep_their_old_names(old, new):
    assert importlib.import_module(f"course_lib.{old}") is importlib.import_module(new)
    assert getattr(course_lib, old) is importlib.import_module(new)


def test_every_public_name_resolves():
    for name in course_lib.__all__:
        assert getattr(course_lib, name) is not None
    for name in importlib.import_module("course_lib.widgets").__all__:
        assert getattr(importlib.import_module("course_lib.widgets"), name) is not None
    grading = importlib.import_module("course_lib.grading")
    for name in grading.__all__:
        assert getattr(grading, name) is not None


def test_the_library_never_imports_tests_notebooks_or_benchmarks():
    pattern = re.compile(r"^\s*(from|import)\s+(tests|benchmarks|lectures|solutions)\b", re.M)
    assert not [p for p in MODULES if pattern.search(p.read_text())]


def test_sandbox_processes_start_without_torch_or_nbgrader():
    # what runs inside a sandbox starts as `python -m course_lib.grading.sandbox.<module>`: the
    # packages above it must not import torch (seconds) or the grader's own tools first
    code = ("import sys, course_lib.grading.sandbox.execute, course_lib.grading.sandbox.namespaces; "
            "heavy = [m for m in ('torch', 'nbgrader', 'course_lib.grading.pipeline') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _imports(path: Path) -> set[str]:
    """The course_lib modules ``path`` imports, anywhere in the file (lazy imports too)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("course_lib.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("course_lib"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from course_lib import attacks`
    return found


def test_no_module_imports_another_in_a_circle():
    name = {p: ".".join(("course_lib", *p.relative_to(LIB).with_suffix("").parts)) for p in MODULES}
    modules = {n for p, n in name.items() if p.name != "__init__.py"}
    graph = {n: {m for m in _imports(p) if m in modules and m != n} for p, n in name.items() if n in modules}
    seen, on_path, circles = set(), [], []

    def visit(n):
        if n in on_path:
            circles.append(on_path[on_path.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        on_path.append(n)
        for m in sorted(graph[n]):
            visit(m)
        on_path.pop()

    for n in sorted(graph):
        visit(n)
    assert not circles, f"modules that import each other in a circle: {circles}"
