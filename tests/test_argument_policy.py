"""One argument policy for the whole library, and every count and radius under it.

Each test file lists calls that pass one count or radius of one public function;
``tests/argument_policy.py``'s ``check_policy`` tries each with a Python number, a NumPy scalar and a
0-d tensor (accepted) and a bool and a string (refused, naming the argument). This file checks
that the lists leave nothing out: it runs them all, records which public functions receive each
refused value under the parameter's own name, and asserts: every public function, method or class of the library and
its widgets that takes a parameter named like a count or a radius has a case for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import course_lib
from argument_policy import RECORD

pytestmark = pytest.mark.layout

TESTS = Path(__file__).resolve().parent
# parameter names that hold a count or a radius wherever the library uses them
COUNTS_AND_RADII = {"eps", "eps_max", "alpha", "sigma", "steps", "epochs", "n", "n0", "num_classes", "batch_size",
                    "num_samples", "restarts", "ramp_batches", "rate", "tag_bits", "step_size", "max_iter", "C",
                    "resolution", "size", "pgd_steps", "gamma", "lr", "queries", "num_queries", "p_init",
                    "levels", "temperature", "components"}
# Parameters with such a name that are not a number a user passes, and why
NOT_A_USER_NUMBER = {
    ("course_lib.svm.support_sets", "alpha"): "the SVM's dual variables, an array",
    ("course_lib.svm.SVMSolution.__init__", "alpha"): "the SVM's dual variables, an array (a result record)",
    ("course_lib.svm.check_labels", "n"): "the number of rows of X, computed by the calling check",
    ("course_lib.layers.folded_bound", "C"): "the specification matrix (N, S, K), not a count",
    ("course_lib.crown.crown_bounds", "C"): "the specification matrix (N, S, K), not a count",
    ("course_lib.specification.check_spec", "C"): "the specification matrix (N, S, K), not a count",
    ("course_lib.specification.check_spec", "n"): "the batch size, computed by crown_bounds from x",
    ("course_lib.rounding.gamma", "n"): "a layer's fan-in, computed by the library from the weights",
    ("course_lib.rounding.box", "eps"): "a checked radius or a per-example tensor, from ibp.input_box",
}
# Result records: their fields are computed, never typed in by a user
RESULT_RECORDS = {"course_lib.smoothing_2d.SmoothedMap", "course_lib.svm.SVMSolution"}

LIBRARY = ["course_lib." + m.name for m in pkgutil.iter_modules(course_lib.__path__)
           if not m.name.startswith("_") and not m.ispkg]
WIDGETS = ["course_lib.widgets." + m.name
           for m in pkgutil.iter_modules(importlib.import_module("course_lib.widgets").__path__)]


def _public_callables(module_name: str):
    module = importlib.import_module(module_name)
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isfunction(obj):
            yield obj
        elif inspect.isclass(obj):
            for meth_name, meth in vars(obj).items():
                if inspect.isfunction(meth) and (meth_name == "__init__" or not meth_name.startswith("_")):
                    yield meth


def _built_by_a_factory(fn) -> bool:
    # an explorer's __init__ is called by its factory function (eps_explorer builds EpsExplorer),
    # which checks the arguments first: the factory has the cases
    explorer = importlib.import_module("course_lib.widgets.explorer").Explorer
    owner = getattr(inspect.getmodule(fn), fn.__qualname__.split(".")[0], None)
    return fn.__name__ == "__init__" and inspect.isclass(owner) and issubclass(owner, explorer)


def required_cases() -> set[tuple[str, str]]:
    """(module.qualname, parameter) for every count or radius of the public API."""
    needed = set()
    for module_name in LIBRARY + WIDGETS:
        for fn in _public_callables(module_name):
            where = f"{fn.__module__}.{fn.__qualname__}"
            if _built_by_a_factory(fn) or where.rsplit(".", 1)[0] in RESULT_RECORDS:
                continue
            needed |= {(where, p) for p in inspect.signature(fn).parameters
                       if p in COUNTS_AND_RADII and (where, p) not in NOT_A_USER_NUMBER}
    return needed


def test_every_count_and_radius_has_a_policy_case(tmp_path):
    # run every test file's argument-policy cases once more, recording which public
    # functions each refused value reaches under the parameter's own name
    record = tmp_path / "reached.jsonl"
    record.touch()
    env = {**os.environ, RECORD: str(record)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS),
                           "-k", "argument_policy and not every_count"],
                          capture_output=True, text=True, env=env, timeout=900, cwd=TESTS.parent)
    assert done.returncode == 0, done.stdout[-3000:]
    reached = {tuple(json.loads(line)) for line in record.read_text().splitlines()}
    missing = sorted(required_cases() - reached)
    assert not missing, f"no argument-policy case reaches: {missing}"
