"""Submissions before grading (:mod:`course_lib.grading.submissions`): the notebook repair as
nbgrader preprocessors, the argument policy of the grading tools, and their docstring examples.
Nothing here starts a sandbox: these run in a second or two."""

from __future__ import annotations

import copy
import doctest
import importlib

import nbformat
import pytest

from course_lib._checks import ArgumentError
from course_lib.grading import sandbox
from course_lib.grading.pipeline import GradingError, grade_submissions
from course_lib.grading.submissions import (AssignmentSource, DemoteStrayGradedCells, RestoreDeletedGradedCells,
                                            check_submission, nbgrader_cells, repair)
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader_helpers import cell, notebook, square_assignment

pytestmark = pytest.mark.grading

NAME = "square.ipynb"


def _source() -> AssignmentSource:
    """The square assignment as the trusted side reads it (its release is the source here)."""
    released = square_assignment()
    cells = nbgrader_cells(released)
    return AssignmentSource(
        notebooks=[NAME], grade_ids={NAME: set(cells)}, test_ids={NAME: ["test_square", "test_cube"]},
        locked={NAME: {g: c.source for g, c in cells.items() if c.metadata["nbgrader"]["locked"]}},
        released={NAME: list(cells.values())})


def _ids(nb) -> list[str | None]:
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]


def _submit(tmp_path, raw: dict):
    import json

    folder = tmp_path / "alice"
    (folder / "sq").mkdir(parents=True)
    (folder / "sq" / NAME).write_text(json.dumps(raw))
    return check_submission(folder, "alice", "sq", _source())


def test_an_older_minor_version_with_cell_ids_is_graded_as_nbgrader_does(tmp_path):
    import json

    raw = json.loads(nbformat.writes(square_assignment()))
    assert all("id" in c for c in raw["cells"])  # cell ids: nbformat 4.5
    reason, _, repaired = _submit(tmp_path / "a", {**raw, "nbformat_minor": 1})  # as some editors save it
    assert reason is None and repaired[NAME].nbformat_minor == 5
    assert [c.source for c in repaired[NAME].cells] == ["".join(c["source"]) for c in raw["cells"]]
    broken = {**raw, "nbformat_minor": 1, "cells": [{**raw["cells"][0], "bogus": 1}] + raw["cells"][1:]}
    reason, _, _ = _submit(tmp_path / "b", broken)  # another defect: still refused, by name
    assert reason == f"{NAME} is not a valid Jupyter notebook (nbformat 4)"


def test_the_repair_steps_are_nbgrader_preprocessors():
    for step in (DemoteStrayGradedCells, RestoreDeletedGradedCells):
        assert issubclass(step, NbGraderPreprocessor)
        assert step.class_traits(config=True)  # configurable like nbgrader's own


def test_an_untouched_submission_needs_no_repair():
    nb = square_assignment()
    before = copy.deepcopy(nb)
    assert repair(nb, NAME, _source()) == []
    assert nb == before


def test_copied_and_unknown_graded_cells_become_ordinary_cells():
    nb = square_assignment()
    copy = nbformat.from_dict(nb.cells[2])  # test_square, copied in JupyterLab with its metadata
    nb.cells.insert(3, copy)
    nb.cells.append(cell("print('mine')\n# BEGIN HIDDEN TESTS", grade_id="made_up", grade=True, points=5))
    notes = repair(nb, NAME, _source())
    assert notes == ["a copy of graded cell test_square was graded as an ordinary cell",
                     "a cell with an unknown id made_up was graded as an ordinary cell"]
    assert _ids(nb) == ["setup", "square", "test_square", None, "cube", "test_cube", "why_q", "why", None]
    # hidden-test markers in ordinary cells are renamed (nbgrader would refuse the feedback)
    assert "HIDDEN TESTS" not in nb.cells[3].source and "BEGIN HIDDEN-TESTS" in nb.cells[3].source
    assert nb.cells[-1].source == "print('mine')\n# BEGIN HIDDEN-TESTS"


def test_deleted_graded_cells_are_put_back_in_place():
    nb = square_assignment()
    del nb.cells[4]  # test_cube
    del nb.cells[1]  # square (a solution cell)
    notes = repair(nb, NAME, _source())
    assert notes == ["solution cell square was deleted (restored empty)",
                     "test cell test_cube was deleted (restored from source)"]
    assert _ids(nb) == _ids(square_assignment())
    assert nb.cells[1].source == "# this cell was missing from the submission"
    assert nb.cells[4].source == square_assignment().cells[4].source and nb.cells[4].outputs == []


def test_the_preprocessors_run_like_nbconverts():
    nb = square_assignment()
    nb.cells.insert(1, nbformat.from_dict(nb.cells[0]))  # a copy of the locked setup cell
    del nb.cells[3]  # test_square
    src = _source()
    resources: dict = {}
    nb, resources = DemoteStrayGradedCells(grade_ids=src.grade_ids[NAME])(nb, resources)
    nb, resources = RestoreDeletedGradedCells(released=src.released[NAME], test_ids=src.test_ids[NAME])(nb, resources)
    assert resources["repair_notes"] == ["a copy of graded cell setup was graded as an ordinary cell",
                                         "test cell test_square was deleted (restored from source)"]
    assert _ids(nb) == ["setup", None, "square", "test_square", "cube", "test_cube", "why_q", "why"]
    off = RestoreDeletedGradedCells(enabled=False)
    assert off(nb, {}) == (nb, {})


# -- one argument-check policy --------------------------------------------------------------

LIMIT_FIELDS = ["cell_timeout", "wall_timeout", "memory_bytes", "max_processes", "max_file_bytes",
                "max_output_chars", "scratch_bytes"]


def _jobs_call(tmp_path):
    def call(jobs):
        try:  # a valid count gets past the check and stops at the unknown assignment
            grade_submissions(tmp_path, "no_such_assignment", tmp_path / "out", jobs=jobs, progress=False)
        except GradingError as err:
            assert "assignment must be one of" in str(err)
    return call


def _cgroup_call(max_processes):
    group = sandbox.make_pids_cgroup(max_processes)
    sandbox.bwrap.remove_cgroup(group)


@pytest.mark.parametrize("name", LIMIT_FIELDS + ["jobs", "make_pids_cgroup"])
def test_argument_policy(name, tmp_path):
    from argument_policy import check_policy

    if name == "jobs":
        check_policy(_jobs_call(tmp_path), "jobs", 2)
    elif name == "make_pids_cgroup":
        check_policy(_cgroup_call, "max_processes", 8)
    else:
        check_policy(lambda v: sandbox.Limits(**{name: v}), name, 7,
                     same=lambda a, b: a == b and type(getattr(b, name)) is int)


@pytest.mark.parametrize("bad", [0, -3])
def test_limits_must_be_positive(bad):
    with pytest.raises(ArgumentError, match=r"cell_timeout must be an integer >= 1"):
        sandbox.Limits(cell_timeout=bad)


@pytest.mark.parametrize("flag", ["unsafe", "progress", "zygote"])
def test_grading_flags_are_bools(flag, tmp_path):
    with pytest.raises(ArgumentError, match=flag):
        grade_submissions(tmp_path, "no_such_assignment", tmp_path / "out", **{flag: 1})


def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    from course_lib.grading.pipeline import main

    assert main(["--submissions", str(tmp_path), "--assignment", "ps1_gd_sgd", "--out", str(tmp_path / "o"),
                 "--jobs", "-1", "--no-progress"]) == 2
    assert "error: jobs must be an integer >= 0, got -1" in capsys.readouterr().err


# -- docstring examples ------------------------------------------------------------------------

MODULES = ["pipeline", "pool", "submissions", "worker", "release", "validate", "feedback", "sandbox.bwrap",
           "sandbox.zygote_client", "sandbox.execute", "sandbox.zygote", "sandbox.namespaces", "sandbox.kernel"]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    mod = importlib.import_module(f"course_lib.grading.{module}")
    assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0
