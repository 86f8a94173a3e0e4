"""Every assignment is proved gradeable.

(a) ``assignments/`` is what ``nbgrader generate_assignment`` makes from ``solutions/``;
(b) autograding the solution scores every autograded point;
(c) autograding the untouched release scores zero;
(d) each known wrong answer (tests/wrong_answers/<assignment>.py) that passes the visible
    tests loses exactly the points of the test cell whose hidden tests catch it.
"""

from __future__ import annotations

import csv
import filecmp
import importlib.util
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import sandbox
from course_lib.grading import grade_submissions
from course_lib.grading.release import REPO, generate_release, list_assignments

pytestmark = pytest.mark.grading

SOLUTIONS, RELEASES = REPO / "solutions", REPO / "assignments"
ASSIGNMENTS = list_assignments(SOLUTIONS)


def test_every_assignment_has_a_release():
    assert ASSIGNMENTS, "no assignment under solutions/"
    assert sorted(p.name for p in RELEASES.iterdir() if p.is_dir()) == ASSIGNMENTS


def _comparable(path: Path) -> dict:
    """A release notebook without the metadata that legitimately changes between runs."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("language_info", None)
    nb.metadata.pop("widgets", None)
    for c in nb.cells:
        c.metadata.pop("execution", None)
    return nb


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_is_in_sync_with_solutions(assignment, tmp_path):
    fresh = generate_release(assignment, tmp_path)
    committed = RELEASES / assignment
    fresh_files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    committed_files = sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    assert fresh_files == committed_files, "run `make release`: the released files differ"
    for rel in fresh_files:
        if rel.suffix == ".ipynb":
            assert _comparable(fresh / rel) == _comparable(committed / rel), \
                f"{committed / rel} is out of date with solutions/: run `make release`"
        else:
            assert filecmp.cmp(fresh / rel, committed / rel, shallow=False), f"{rel} differs: run `make release`"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_hides_solutions_and_hidden_tests(assignment):
    for path in (RELEASES / assignment).glob("*.ipynb"):
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, f"{path.name} leaks {marker!r}"
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs left in the release"


def _test_points(assignment: str) -> dict[str, float]:
    """Points of each autograded (code) test cell, read from the source notebooks' metadata."""
    points = {}
    for path in (SOLUTIONS / assignment).glob("*.ipynb"):
        for c in nbformat.read(path, as_version=4).cells:
            meta = c.metadata.get("nbgrader", {})
            if meta.get("grade") and c.cell_type == "code":
                points[meta["grade_id"]] = float(meta["points"])
    return points


def _wrong_answers(assignment: str) -> dict:
    path = Path(__file__).parents[1] / "wrong_answers" / f"{assignment}.py"
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location(f"wrong_answers_{assignment}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WRONG_ANSWERS


@pytest.fixture(scope="module", params=ASSIGNMENTS)
def graded(request, tmp_path_factory):
    assignment = request.param
    root = tmp_path_factory.mktemp(assignment)
    students = {"solution": SOLUTIONS / assignment, "release": RELEASES / assignment}
    wrong = _wrong_answers(assignment)
    for name, (cell_id, _, code) in wrong.items():
        folder = root / "built" / name
        folder.mkdir(parents=True)
        for path in (SOLUTIONS / assignment).glob("*.ipynb"):
            nb = nbformat.read(path, as_version=4)
            for c in nb.cells:
                if c.metadata.get("nbgrader", {}).get("grade_id") == cell_id:
                    c.source = code
            nbformat.write(nb, folder / path.name)
        students[name] = folder
    subs = root / "submissions"
    for student, folder in students.items():
        target = subs / student / assignment
        target.mkdir(parents=True)
        for path in folder.glob("*.ipynb"):
            (target / path.name).write_bytes(path.read_bytes())
    out = root / "out"
    # in the sandbox where bubblewrap runs; elsewhere the same pipeline without isolation
    grade_submissions(subs, assignment, out, progress=False, unsafe=sandbox.bwrap_problem() is not None)
    with open(out / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    return assignment, rows, wrong


def test_solution_scores_every_autograded_point(graded):
    assignment, rows, _ = graded
    auto = sum(_test_points(assignment).values())
    assert auto > 0
    row = rows["solution"]
    assert row["status"] == "graded", row["reason"]
    assert float(row["score"]) == auto
    assert float(row["max_score"]) >= auto  # the rest are written answers graded by hand


def test_untouched_release_scores_zero(graded):
    row = graded[1]["release"]
    assert row["status"] == "graded", row["reason"]
    assert float(row["score"]) == 0


def test_each_wrong_answer_loses_exactly_its_points(graded):
    assignment, rows, wrong = graded
    points = _test_points(assignment)
    for name, (_, test_id, _) in wrong.items():
        assert rows[name]["status"] == "graded", rows[name]["reason"]
        assert float(rows[name]["score"]) == sum(points.values()) - points[test_id], name
