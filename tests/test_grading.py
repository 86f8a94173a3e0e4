"""The grading pipeline (``make grade`` / ``python -m course_lib.grading``) on a small
synthetic assignment whose scores are known: 2 points for ``square`` (one visible and
one hidden test), 3 for ``cube``, 1 for a written answer graded by hand."""

from __future__ import annotations

import csv
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import CSV_COLUMNS
from course_lib.release import generate_release
from nbgrader_helpers import square_assignment

pytestmark = pytest.mark.grading

ASSIGNMENT = "sq"
MAX_SCORE = 6


def _edit(nb, grade_id, source):
    nb = nbformat.from_dict(nb)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    cell.source = source
    return nb


def _html_text(path: Path) -> str:
    """The visible text of an HTML page (syntax highlighting splits code into spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    source = root / "solutions"
    (source / ASSIGNMENT).mkdir(parents=True)
    solution = square_assignment()
    nbformat.write(solution, source / ASSIGNMENT / "sq.ipynb")
    release = nbformat.read(generate_release(ASSIGNMENT, root / "release", source_root=source) / "sq.ipynb",
                            as_version=4)
    subs = root / "submissions"
    cases = {
        "alice": solution,  # the model answer
        "bob": release,  # handed in untouched
        # passes the visible test square(3) == 9 but not the hidden square(-4) == 16
        "gina": _edit(solution, "square", "def square(x):\n    return 3 * x"),
        # cube is right, square times out; the run goes on after the timeout
        "dave": _edit(solution, "square", "import time\ntime.sleep(60)\ndef square(x):\n    return x * x"),
        # a student who rewrote a test cell to `pass` gets it back from the source
        "tom": _edit(_edit(release, "test_cube", "pass"), "cube", "def cube(x):\n    return 0"),
    }
    for student, nb in cases.items():
        (subs / student / ASSIGNMENT).mkdir(parents=True)
        nbformat.write(nb, subs / student / ASSIGNMENT / "sq.ipynb")
    (subs / "carol" / ASSIGNMENT).mkdir(parents=True)
    (subs / "carol" / ASSIGNMENT / "sq.ipynb").write_text("{ this is not JSON")
    (subs / "erin" / ASSIGNMENT).mkdir(parents=True)
    (subs / "erin" / ASSIGNMENT / "notes.txt").write_text("forgot the notebook")
    (subs / "frank" / "ps9").mkdir(parents=True)
    (subs / "README.txt").write_text("a stray file is not a student")
    out = root / "out"
    done = subprocess.run([sys.executable, "-m", "course_lib.grading", "--submissions", str(subs),
                           "--assignment", ASSIGNMENT, "--out", str(out), "--cell-timeout", "3",
                           "--source", str(source), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    with open(out / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    return done, rows, out


def test_exit_code_and_one_row_per_student_folder(graded):
    done, rows, out = graded
    assert done.returncode == 0, done.stderr
    assert sorted(rows) == ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "tom"]
    with open(out / "grades.csv", newline="") as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    assert all(r["assignment"] == ASSIGNMENT and float(r["max_score"]) == MAX_SCORE for r in rows.values())
    assert "5 graded, 3 failed" in done.stdout


def test_model_answer_gets_every_autograded_point(graded):
    row = graded[1]["alice"]
    assert (row["status"], float(row["score"])) == ("graded", 5)
    assert "1 point of written answers await manual grading" in row["reason"]


def test_untouched_release_scores_zero(graded):
    row = graded[1]["bob"]
    assert (row["status"], float(row["score"])) == ("graded", 0)


def test_hidden_tests_run_at_grading_time(graded):
    assert float(graded[1]["gina"]["score"]) == 3  # loses square's 2 points, keeps cube's 3


def test_edited_test_cell_is_restored_from_source(graded):
    assert float(graded[1]["tom"]["score"]) == 0


def test_timeout_is_reported_with_the_cell(graded):
    row = graded[1]["dave"]
    assert row["status"] == "graded" and float(row["score"]) == 3
    assert "timed out after 3 s in cell square" in row["reason"]


@pytest.mark.parametrize("student,reason", [
    ("carol", "sq.ipynb is not valid notebook JSON"),
    ("erin", "notebook sq.ipynb is missing"),
    ("frank", "no folder sq/ inside the student's folder"),
])
def test_broken_submissions_fail_with_a_one_line_reason(graded, student, reason):
    row = graded[1][student]
    assert (row["status"], float(row["score"]), row["reason"]) == ("failed", 0, reason)
    assert reason in graded[0].stdout


def test_feedback_is_written_without_hidden_tests(graded):
    out = graded[2]
    for student in ("alice", "bob", "gina", "dave", "tom"):
        text = _html_text(out / "feedback" / student / ASSIGNMENT / "sq.html")
        assert "test_square" in text and "assert square(3) == 9" in text
        assert "square(-4)" not in text  # hidden test code stays hidden, tracebacks included
    assert not (out / "feedback" / "carol").exists()
    assert (out / "gradebook.db").is_file()


def test_gradebook_is_the_record(graded):
    from nbgrader.api import Gradebook

    rows, out = graded[1], graded[2]
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        for student in ("alice", "bob", "gina", "dave", "tom"):
            assert gb.find_submission(ASSIGNMENT, student).score == float(rows[student]["score"])


def test_bad_arguments_exit_with_a_message(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "course_lib.grading", *args],
                              capture_output=True, text=True, timeout=120)

    done = run("--submissions", str(tmp_path / "nope"), "--assignment", "ps1_gd_sgd", "--out", str(tmp_path))
    assert done.returncode == 2 and "submissions must be a folder" in done.stderr
    done = run("--submissions", str(tmp_path), "--assignment", "no_such", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "assignment must be one of" in done.stderr


def test_make_grade_without_arguments_prints_usage():
    root = Path(__file__).resolve().parent.parent
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-s", "grade"], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "usage: make grade SUBMISSIONS=" in done.stdout
