"""nbgrader's own fixtures (``nbgrader_files/``, copied from nbgrader 0.9.6's test suite, see its
README) graded through ``make grade``'s pipeline score as nbgrader's
``tests/apps/test_nbgrader_autograde.py`` asserts: submission times and due dates
(``test_grade_timestamp``, ``test_grade_empty_timestamp``), the late-submission plugins
(``test_late_submission_penalty_none``, ``_zero``, ``_plugin``: 1 point per hour), a missing
notebook (``test_grade_missing_notebook``), a notebook without graded cells, and
``autotests.yml`` at the course root (``test_grade_autotest``). Where nbgrader stops the whole
run (an unreadable ``timestamp.txt``), the student gets a failed row naming the file."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import grade_submissions, sandbox
from course_lib.grading.late import GradingInputError, LatePolicy, PerHourPenalty, read_extensions
from nbgrader_helpers import cell, notebook

pytestmark = pytest.mark.grading

FILES = Path(__file__).parent / "nbgrader_files"
DUE = "2015-02-02 14:58:23.948203 America/Los_Angeles"
UNSAFE = sandbox.bwrap_problem() is not None
# the times nbgrader's tests write into timestamp.txt
AT = {"4h": "2015-02-02 18:58:23.948203 America/Los_Angeles", "1h": "2015-02-02 15:58:23.948203 America/Los_Angeles",
      "due": DUE, "day_early": "2015-02-01 14:58:23.948203 America/Los_Angeles", "blank": "",
      "invalid": "But I want to be a timestamp string :("}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The source assignments: ps1 (p1 = submitted-unchanged, as nbgrader's tests release it),
    two (p1 and p2 both that), plain (a notebook without nbgrader cells, written here), auto (nbgrader's
    autotest example, with autotests.yml at the course root)."""
    root = tmp_path_factory.mktemp("parity")
    source = root / "solutions"
    for name, notebooks in {"ps1": {"p1": "submitted-unchanged"},
                            "two": {"p1": "submitted-unchanged", "p2": "submitted-unchanged"},
                            "auto": {"p1": "autotest-simple"}}.items():
        (source / name).mkdir(parents=True)
        for nb, fixture in notebooks.items():
            shutil.copy(FILES / f"{fixture}.ipynb", source / name / f"{nb}.ipynb")
    (source / "plain").mkdir()  # nbgrader's test-no-metadata.ipynb holds solution markers its release refuses
    nbformat.write(notebook(cell("x = 1"), cell("Some text.", kind="markdown")), source / "plain" / "p1.ipynb")
    shutil.copy(FILES / "autotests.yml", root / "autotests.yml")  # the course root, where nbgrader looks
    return root


def _hand_in(root: Path, assignment: str, students: dict[str, tuple[dict[str, str], str | None]]) -> Path:
    """students: name -> ({notebook: fixture}, timestamp.txt text or None)."""
    subs = root / "submissions"
    for student, (notebooks, stamp) in students.items():
        folder = subs / student / assignment
        folder.mkdir(parents=True)
        for nb, fixture in notebooks.items():
            shutil.copy(FILES / f"{fixture}.ipynb", folder / f"{nb}.ipynb")
        if stamp is not None:
            (folder / "timestamp.txt").write_text(stamp)
    return subs


def _grade(course: Path, subs: Path, assignment: str, out: Path, **options):
    rows = grade_submissions(subs, assignment, out, source_root=course / "solutions", jobs=2, progress=False,
                             unsafe=UNSAFE, **options)
    return {r.student: r for r in rows}


def _notebooks(out: Path, assignment: str, student: str):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        sub = gb.find_submission(assignment, student)
        return sub.total_seconds_late, [(nb.name, nb.score, nb.max_score, nb.late_submission_penalty,
                                         nb.needs_manual_grade) for nb in sub.notebooks]


@pytest.fixture(scope="module")
def late_class(course, tmp_path_factory):
    """ps1 graded with the due date, no penalty (nbgrader's default), every timestamp case,
    and one extension."""
    root = tmp_path_factory.mktemp("late")
    subs = _hand_in(root, "ps1", {"foo": ({"p1": "submitted-unchanged"}, AT["4h"]),
                                  "bar": ({"p1": "submitted-changed"}, AT["1h"]),
                                  "ontime": ({"p1": "submitted-changed"}, AT["due"]),
                                  "early": ({"p1": "submitted-changed"}, AT["day_early"]),
                                  "blank": ({"p1": "submitted-unchanged"}, AT["blank"]),
                                  "broken": ({"p1": "submitted-changed"}, AT["invalid"]),
                                  "granted": ({"p1": "submitted-changed"}, AT["1h"])})
    extensions = root / "extensions.csv"
    extensions.write_text("student,hours\ngranted,2\n")
    out = root / "out"
    rows = _grade(course, subs, "ps1", out, duedate=DUE, extensions=extensions)
    return {"root": root, "subs": subs, "out": out, "rows": rows}


def test_timestamps_and_the_due_date_give_nbgraders_seconds_late(late_class):
    rows, out = late_class["rows"], late_class["out"]
    late = {s: r.late_seconds for s, r in rows.items() if r.status == "graded"}
    assert late == {"foo": 4 * 3600, "bar": 3600, "ontime": 0, "early": 0, "blank": 0, "granted": 0}
    for s, seconds in late.items():
        assert _notebooks(out, "ps1", s)[0] == seconds  # the gradebook's record, as nbgrader computes it


def test_an_unreadable_timestamp_is_a_reason_naming_the_file(late_class):
    row = late_class["rows"]["broken"]
    assert row.status == "failed" and row.score == 0
    assert row.reason.startswith("ps1/timestamp.txt is not a date and time")
    assert "But I want to be a timestamp string" in row.reason


def test_no_penalty_method_scores_as_nbgrader(late_class):
    rows, out = late_class["rows"], late_class["out"]
    assert (rows["foo"].auto_score, rows["bar"].auto_score) == (1, 2)  # nbgrader: nb.score 1 and 2
    for s in ("foo", "bar"):
        assert _notebooks(out, "ps1", s)[1][0][3] is None  # late_submission_penalty None
        assert rows[s].penalty == 0 and rows[s].score == rows[s].auto_score


def test_written_answers_and_manually_graded_code_are_named_apart(late_class):
    # the fixtures have a 2-point markdown answer (baz) and a 3-point code cell graded by hand (quux);
    # submitted-changed answers both, submitted-unchanged leaves them as released (nbgrader scores that 0)
    reason = late_class["rows"]["bar"].reason
    assert reason == "2 points of written answers and 3 points of manually graded code await manual grading"
    assert late_class["rows"]["bar"].max_score == 7
    assert late_class["rows"]["foo"].reason == ""


@pytest.mark.parametrize("late, expected", [
    # nbgrader's test_late_submission_penalty_zero: penalty = notebook score when late
    ("zero", {"foo": 1, "bar": 2, "ontime": None}),
    # its test_late_submission_penalty_plugin (1 point per hour): 4 h late on 1 point -> 1 (capped), 1 h -> 1
    ("per_hour", {"foo": 1, "bar": 1, "ontime": None}),
])
def test_late_penalties_as_nbgraders_plugins(course, tmp_path, late, expected):
    subs = _hand_in(tmp_path, "ps1", {"foo": ({"p1": "submitted-unchanged"}, AT["4h"]),
                                      "bar": ({"p1": "submitted-changed"}, AT["1h"]),
                                      "ontime": ({"p1": "submitted-changed"}, AT["due"])})
    out = tmp_path / "out"
    rows = _grade(course, subs, "ps1", out, duedate=DUE, late=late)
    for s, penalty in expected.items():
        assert _notebooks(out, "ps1", s)[1][0][3] == penalty, s
        assert rows[s].penalty == (penalty or 0) and rows[s].score == rows[s].auto_score - (penalty or 0)
    if late != "zero":
        return
    # a later run without DUEDATE/LATE keeps them, and no longer late means no penalty (nbgrader issue 723)
    (subs / "bar" / "ps1" / "timestamp.txt").write_text(DUE)
    again = _grade(course, subs, "ps1", out, student="bar")
    assert again["bar"].penalty == 0 and _notebooks(out, "ps1", "bar")[1][0][3] is None
    assert _notebooks(out, "ps1", "foo")[1][0][3] == expected["foo"]


def test_a_missing_notebook_scores_zero_and_the_others_are_graded(course, tmp_path):
    subs = _hand_in(tmp_path, "two", {"foo": ({"p1": "submitted-changed"}, None)})
    out = tmp_path / "out"
    row = _grade(course, subs, "two", out)["foo"]
    assert (row.status, row.score, row.max_score) == ("graded", 2, 14)  # nbgrader: 2 / 14
    # the written answers of the notebook handed in still await grading; the missing one's do not
    assert row.reason == ("notebook p2.ipynb is missing (scored 0); 2 points of written answers and "
                          "3 points of manually graded code await manual grading")
    p1, p2 = _notebooks(out, "two", "foo")[1]
    assert p2[0] == "p2" and p2[1] == 0 and not p2[4]  # nbgrader: nb2.score 0, not needs_manual_grade
    assert (out / "autograded" / "foo" / "two" / "p1.ipynb").is_file()
    assert not (out / "autograded" / "foo" / "two" / "p2.ipynb").exists()


def test_an_assignment_without_graded_cells_is_graded_zero_of_zero(course, tmp_path):
    subs = tmp_path / "submissions"
    shutil.copytree(course / "solutions" / "plain", subs / "foo" / "plain")
    row = _grade(course, subs, "plain", tmp_path / "out")["foo"]
    assert (row.status, row.score, row.max_score, row.reason) == ("graded", 0, 0, "")


def test_autotests_yml_at_the_course_root_is_found(course, tmp_path):
    subs = _hand_in(tmp_path, "auto", {"foo": ({"p1": "autotest-simple-unchanged"}, None),
                                       "bar": ({"p1": "autotest-simple-changed"}, None)})
    rows = _grade(course, subs, "auto", tmp_path / "out")
    # nbgrader's test_grade_autotest: foo 0 / 1, bar 1 / 1
    assert {s: (r.status, r.score, r.max_score) for s, r in rows.items()} == {
        "foo": ("graded", 0, 1), "bar": ("graded", 1, 1)}


# -- the late policy and its inputs, without grading ---------------------------------------


def test_the_policies_agree_with_nbgraders_plugin_interface():
    from nbgrader.plugins import LateSubmissionPlugin

    for seconds in (1.0, 3599.0, 3600.0, 3601.0, 4 * 3600.0, 10 * 86400.0):
        hours_started = -(-seconds // 3600)
        for score in (0.0, 0.5, 3.0, 100.0):
            assert LatePolicy("per_hour", 2.5).penalty(score, seconds) == min(score, 2.5 * hours_started)
            assert LatePolicy("zero").penalty(score, seconds) == score
            assert LatePolicy("zero").penalty(score, seconds) == LateSubmissionPlugin(
                penalty_method="zero").late_submission_penalty("x", score, seconds)
            assert LatePolicy("none").penalty(score, seconds) is None
            assert PerHourPenalty(points_per_hour=2.5).late_submission_penalty("x", score, seconds) == 2.5 * hours_started
    assert LatePolicy("zero").penalty(5.0, 0.0) is None  # on time: no penalty


def test_bad_policies_and_extension_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="late must be one of"):
        LatePolicy("half")
    with pytest.raises(ValueError, match="per_hour must be"):
        LatePolicy("per_hour", -1)
    bad = tmp_path / "ext.csv"
    bad.write_text("student,hours\nalice,soon\n")
    with pytest.raises(GradingInputError, match="line 2"):
        read_extensions(bad)
    bad.write_text("name,days\nalice,1\n")
    with pytest.raises(GradingInputError, match="student,hours"):
        read_extensions(bad)
    with pytest.raises(GradingInputError, match="DUEDATE is not a date and time"):
        grade_submissions(tmp_path, "ps1_gd_sgd", tmp_path / "out", duedate="soon-ish", unsafe=True,
                          progress=False)
    good = tmp_path / "good.csv"
    good.write_text("student,hours\nalice,1.5\nbob,0\n")
    assert read_extensions(good) == {"alice": dt.timedelta(hours=1.5), "bob": dt.timedelta(0)}


@pytest.mark.parametrize("module", ["late", "gradebook", "grades", "course", "export"])
def test_docstring_examples(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"course_lib.grading.{module}")
    assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0


def test_make_release_finds_autotests_yml_at_the_course_root(course, tmp_path):
    from course_lib.grading.release import generate_release

    released = nbformat.read(generate_release("auto", tmp_path, source_root=course / "solutions") / "p1.ipynb",
                             as_version=4)
    test = next(c for c in released.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_simple")
    assert "AUTOTEST" not in test.source and "assert" in test.source  # expanded from autotests.yml


def test_a_zip_gives_each_folder_its_entry_time_unless_it_has_a_timestamp(tmp_path):
    import zipfile

    from course_lib.grading.late import read_timestamp
    from course_lib.grading.submissions import unpack_zip

    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for student, when in (("foo", (2015, 2, 2, 23, 58, 22)), ("bar", (2015, 2, 1, 10, 0, 0))):
            z.writestr(zipfile.ZipInfo(f"wrap/{student}/ps1/p1.ipynb", when), "{}")
        z.writestr(zipfile.ZipInfo("wrap/foo/ps1/p2.ipynb", (2015, 2, 2, 23, 58, 24)), "{}")  # the newest counts
        z.writestr(zipfile.ZipInfo("wrap/bar/ps1/timestamp.txt", (2015, 2, 9, 0, 0, 0)), AT["day_early"])
    folder = unpack_zip(archive, tmp_path / "unzipped", "ps1")
    assert (folder / "foo" / "ps1" / "timestamp.txt").read_text() == "2015-02-02 23:58:24 UTC\n"
    assert read_timestamp(folder / "foo" / "ps1") == dt.datetime(2015, 2, 2, 23, 58, 24)
    assert (folder / "bar" / "ps1" / "timestamp.txt").read_text() == AT["day_early"]  # its own is kept


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")  # nbgrader's add_submission, harmless
def test_totals_and_what_awaits_grading_on_random_gradebooks(tmp_path):
    """gradebook.summary against a direct computation, on 25 random submissions: total =
    autograded + manual (+ extra credit) - penalty, each kind of cell left to grade by hand
    named apart (written answers, manually graded code, tasks), and the penalty of each policy."""
    import random

    from nbgrader.api import Gradebook

    from course_lib.grading import gradebook
    from course_lib.grading.release import nbgrader as run_nbgrader

    task = nbformat.v4.new_markdown_cell("Plot the loss.")
    task.metadata["nbgrader"] = {"schema_version": 3, "grade_id": "plot", "task": True, "points": 2,
                                 "solution": False, "grade": False, "locked": True}
    source = notebook(
        cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION", grade_id="f", solution=True),
        cell("assert f() == 1", grade_id="test_f", grade=True, points=3, locked=True),
        cell("### BEGIN SOLUTION\nx = 2\n### END SOLUTION", grade_id="code_by_hand", solution=True, grade=True,
             points=4),
        cell("### BEGIN SOLUTION\nBecause.\n### END SOLUTION", kind="markdown", grade_id="essay", solution=True,
             grade=True, points=1.5), task)
    (tmp_path / "source" / "a").mkdir(parents=True)
    nbformat.write(source, tmp_path / "source" / "a" / "n.ipynb")
    db = tmp_path / "gradebook.db"
    done = run_nbgrader(["generate_assignment", "a", "--force"], tmp_path, source="source", release="release", db=db)
    assert done.returncode == 0, done.stderr
    kinds = {"test_f": None, "code_by_hand": "manually graded code", "essay": "written answers", "plot": "tasks"}
    maxima = {"test_f": 3, "code_by_hand": 4, "essay": 1.5, "plot": 2}
    rng = random.Random(0)
    with Gradebook(f"sqlite:///{db}") as gb:
        gb.update_or_create_assignment("a", duedate=dt.datetime(2026, 1, 1))
        for trial in range(25):
            student = f"s{trial}"
            gb.add_student(student)
            late = rng.choice([0, 0, 1, 3599, 3600, 7201])
            gb.add_submission("a", student, timestamp=dt.datetime(2026, 1, 1) + dt.timedelta(seconds=late))
            auto = manual = extra = 0.0
            pending: dict[str, float] = {}
            by_hand = False
            for grade in gb.find_submission_notebook("n", "a", student).grades:
                m = maxima[grade.name]
                grade.auto_score = rng.choice([0.0, m]) if grade.name == "test_f" else None
                grade.manual_score = rng.choice([None, None, round(rng.uniform(0, m), 2)])
                grade.extra_credit = rng.choice([None, None, 0.5]) if grade.manual_score is not None else None
                if grade.manual_score is not None:
                    manual += grade.manual_score + (grade.extra_credit or 0)
                    by_hand = True
                elif grade.auto_score is not None:
                    auto += grade.auto_score
                else:
                    pending[kinds[grade.name]] = pending.get(kinds[grade.name], 0) + m
            gb.db.commit()
            policy = LatePolicy(rng.choice(["none", "zero", "per_hour"]), rng.choice([0.5, 1.0, 2.0]))
            gradebook.assign_penalties(db, "a", [student], policy)
            s = gradebook.summary(db, "a", student)
            score = auto + manual
            penalty = {"none": 0.0, "zero": score if late else 0.0,
                       "per_hour": min(score, policy.per_hour * -(-late // 3600))}[policy.method]
            assert s.auto_score == pytest.approx(auto) and s.late_seconds == late
            assert s.manual_score == (pytest.approx(manual) if by_hand else None)
            assert s.penalty == pytest.approx(penalty) and s.total == pytest.approx(score - penalty)
            assert s.max_score == pytest.approx(10.5) and s.pending == pytest.approx(pending)
            note = gradebook.pending_note(s)
            for kind, points in pending.items():
                assert f"{gradebook._fmt(points)} {gradebook._unit(points)} of {kind}" in note
            assert (note is None) == (not pending)
