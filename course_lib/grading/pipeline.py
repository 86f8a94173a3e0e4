"""Autograde a class with nbgrader: sandboxed, parallel, with grades and feedback.

Usage (``make grade`` calls this)::

    python -m course_lib.grading --submissions DIR_OR_ZIP --assignment NAME --out OUT
                                 [--student ID] [--jobs N] [--unsafe] [--no-zygote] [limits...]

``DIR_OR_ZIP`` holds one folder per student, ``<student>/<assignment>/<notebook>.ipynb``
(a zip of that, as a learning-management system exports it, is unpacked first; one
wrapping folder is allowed). The run works in a scratch nbgrader course directory:

1. ``source/<assignment>`` is copied from ``solutions/`` and released there with
   ``nbgrader generate_assignment``: a fresh gradebook records every graded cell, its
   points and checksum (hidden tests exist only here, at grading time);
2. each student's folder is checked (notebook present, valid JSON, from this assignment,
   not oversized), its notebooks repaired so that nbgrader can grade them (copied and
   unknown graded cells demoted, deleted ones put back), and its regular files (no links)
   are copied to ``submitted/`` (:mod:`course_lib.grading.submissions`);
3. a pool of ``JOBS`` trusted workers (:mod:`course_lib.grading.pool`, each a
   :mod:`course_lib.grading.worker` process) runs nbgrader's ``Autograde`` for one student
   at a time: locked and test cells are restored from the gradebook (deleted ones put
   back), the notebook executes in a bubblewrap sandbox
   (:mod:`course_lib.grading.sandbox`), and the grades are computed from what comes back;
4. ``nbgrader generate_feedback`` renders the graded notebook (hidden test code removed);
5. the manual grades ``OUT``'s gradebook held for these students are written back
   (:mod:`course_lib.grading.gradebook`; flagged for review where the submission changed),
   the late penalties recomputed (:mod:`course_lib.grading.late`), and the course folders
   moved to ``OUT`` (:mod:`course_lib.grading.course`).

``OUT`` is then an nbgrader course directory (``make formgrade OUT=...`` opens Formgrader on
it): ``grades.csv`` (:mod:`course_lib.grading.grades`), ``feedback/``, ``autograded/``,
``submitted/``, ``source/``, ``release/``, ``gradebook.db`` (nbgrader's record) and its
``nbgrader_config.py``. ``--student ID`` regrades one student: the others' rows, feedback and
gradebook entries are kept as they are. Reasons are one deterministic line each, so a rerun
writes the same CSV. The command exits 0 when every student got a row, 2 when the run itself
could not start.

:func:`grade_submissions` reads as these steps, each a function below it, in order:
check the arguments, settle the due date and penalty, open the submissions, choose the
students, release the assignment for grading, read the manual grades, check and stage each
submission, record the submission times, autograde, keep the manual grades, move the
course to ``OUT``, write ``grades.csv``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from tqdm.auto import tqdm

from course_lib import _checks
from course_lib.grading import course as course_dir
from course_lib.grading import feedback, gradebook, grades, sandbox
from course_lib.grading import late as late_work
from course_lib.grading.grades import CSV_COLUMNS, GradeRow, fmt
from course_lib.grading.late import LatePolicy
from course_lib.grading.pool import CRASHED, worker_results
from course_lib.grading.release import REPO, SOURCE_DIR, list_assignments, nbgrader
from course_lib.grading.sandbox import Limits
from course_lib.grading.submissions import (AssignmentSource, GradingError, check_submission,
                                            open_submissions, read_source, stage, student_folders)
from course_lib.grading.submissions import MAX_NOTEBOOK_BYTES, MAX_ZIP_BYTES, STUDENT_ID  # noqa: F401  (were here)

__all__ = ["CSV_COLUMNS", "GradeRow", "GradingError", "grade_submissions", "main"]

@dataclass
class _Course:
    """The scratch nbgrader course directory of one run, once the assignment is released there."""

    root: Path
    assignment: str
    source: AssignmentSource
    max_score: float

    @property
    def db(self) -> Path:
        return self.root / "gradebook.db"


@dataclass
class _Due:
    """The run's late-work settings: nbgrader's due date, extensions and penalty policy."""

    duedate: datetime.datetime | None
    extensions: dict[str, datetime.timedelta]
    policy: LatePolicy


def grade_submissions(submissions: Path, assignment: str, out: Path, *,
                      source_root: Path = REPO / SOURCE_DIR, limits: Limits = Limits(),
                      jobs: int | None = None, student: str | None = None, unsafe: bool = False,
                      progress: bool = True, zygote: bool = True, duedate: str | None = None,
                      extensions: Path | None = None, late: str | None = None,
                      per_hour: float | None = None) -> list[GradeRow]:
    """Autograde every student folder in ``submissions`` (or only ``student``) into ``out``.

    Args:
        submissions: folder (or .zip) of ``<student>/<assignment>/<notebook>.ipynb``.
        assignment: the assignment's name, a folder under ``source_root``.
        out: output folder, an nbgrader course directory (:mod:`course_lib.grading.course`):
            ``grades.csv``, ``feedback/``, ``autograded/``, ``gradebook.db``, ...
        source_root: nbgrader source folders (default the repository's ``solutions/``).
        limits: the sandbox's resource caps (:class:`course_lib.grading.sandbox.Limits`).
        jobs: submissions graded at once; default (None or 0) the number of CPU cores.
        student: regrade only this student, keeping everything else in ``out``.
        unsafe: run without bubblewrap (resource limits only, no isolation).
        progress: show a tqdm bar (students done, failed, ETA).
        zygote: fork each submission's sandbox from one pre-imported Python per worker
            (:class:`course_lib.grading.sandbox.Zygote`); False starts a sandbox from scratch for each.
        duedate: the due date, as nbgrader reads one (``"2026-03-01 23:59 Europe/Berlin"``);
            default the one ``out`` recorded, else none (nothing is late).
        extensions: CSV ``student,hours`` of extensions (default those ``out`` recorded).
        late: ``none``, ``zero`` or ``per_hour`` (:mod:`course_lib.grading.late`); default
            the one ``out`` recorded, else ``none``.
        per_hour: points taken per hour late with ``per_hour`` (default 1, or the recorded one).

    Returns:
        The rows of the students graded in this run, sorted by student.

    Raises:
        GradingError: an unknown assignment or student, bubblewrap missing without ``unsafe``,
            unreadable submissions or a broken source.
        ValueError: a due date or extensions file that cannot be read.
        course_lib._checks.ArgumentError: ``jobs`` not a count, or a flag not a bool.

    Examples:
        >>> rows = grade_submissions("submissions.zip", "ps1_gd_sgd", "grading_out")  # doctest: +SKIP
        >>> rows[0].status, rows[0].score  # doctest: +SKIP
        ('graded', 10.0)
    """
    submissions, out = Path(submissions), Path(out)
    jobs = _check_arguments(assignment, source_root, jobs, unsafe, progress, zygote)
    state = grades.read_state(out)
    if student is not None and state["assignment"] not in (None, assignment):
        raise GradingError(f"{out} holds grades of {state['assignment']}, not {assignment}: regrade into another OUT")
    due = _due_settings(out, assignment, state, duedate, extensions, late, per_hour)
    with tempfile.TemporaryDirectory(prefix="course_grade_") as tmp:
        tmp = Path(tmp)
        folder = open_submissions(submissions, tmp, assignment)
        students = _students_to_grade(folder, student)
        course = _release_for_grading(source_root, assignment, tmp / "course", out, student is not None, due)
        previous = gradebook.manual_record(out / "gradebook.db", assignment, students)
        status, notes, runnable = _check_and_stage(folder, students, course)
        late_work.set_due(course.db, assignment, due.duedate, due.extensions,
                          {s: late_work.read_timestamp(folder / s / assignment) for s in runnable})
        _autograde(course, runnable, status, notes, len(students), limits=limits, unsafe=unsafe,
                   jobs=jobs, zygote=zygote, progress=progress)
        _keep_manual_grades(course, out, previous, status, notes, due.policy)
        course_dir.install(course.root, out, assignment, students, full=student is None)
    course_dir.write_config(out, due.policy)
    entries = {} if student is None else state["students"]
    entries.update({s: {"status": status[s], "notes": notes[s]} for s in students})
    grades.write_state(out, {"assignment": assignment, "late": due.policy.as_dict(), "students": entries})
    rows = {r.student: r for r in grades.refresh(out)}
    return [rows[s] for s in students]


# -- the steps of grade_submissions, in order ---------------------------------------------


def _check_arguments(assignment: str, source_root: Path, jobs: int | None, unsafe: bool,
                     progress: bool, zygote: bool) -> int:
    """Refuse what cannot run before any work starts; returns the number of jobs."""
    jobs = None if jobs is None else _checks.integer(jobs, "jobs", ge=0)
    for value, name in ((unsafe, "unsafe"), (progress, "progress"), (zygote, "zygote")):
        _checks.flag(value, name)
    if assignment not in list_assignments(source_root):
        raise GradingError(f"assignment must be one of {list_assignments(source_root)}, got {assignment!r}")
    jobs = jobs or os.cpu_count() or 1
    if not unsafe:
        problem = sandbox.bwrap_problem()
        if problem:
            raise GradingError(problem)
    return jobs


def _due_settings(out: Path, assignment: str, state: dict, duedate: str | None, extensions: Path | None,
                  late: str | None, per_hour: float | None) -> _Due:
    """This run's due date, extensions and policy: those given, else those ``out`` recorded."""
    before_due, before_ext = late_work.previous_due(out / "gradebook.db", assignment)
    recorded = grades.policy_of(state) if state["assignment"] == assignment else LatePolicy()
    policy = LatePolicy(late if late is not None else recorded.method,
                        per_hour if per_hour is not None else recorded.per_hour)
    return _Due(late_work.parse_time(duedate, "DUEDATE") if duedate else before_due,
                late_work.read_extensions(Path(extensions)) if extensions else before_ext, policy)


def _students_to_grade(folder: Path, student: str | None) -> list[str]:
    """Every student folder, or only ``student``'s (which must be there)."""
    everyone = student_folders(folder)
    if student is not None and student not in everyone:
        raise GradingError(f"student {student!r} has no folder in {str(folder)!r}")
    return [student] if student is not None else everyone


def _release_for_grading(source_root: Path, assignment: str, root: Path, out: Path, regrade: bool,
                         due: _Due) -> _Course:
    """A scratch course directory at ``root`` where ``nbgrader generate_assignment`` released the
    source: a fresh gradebook records every graded cell (a regrade starts from ``out``'s, to keep
    everyone else's record), with the due date."""
    db = root / "gradebook.db"
    shutil.copytree(source_root / assignment, root / "source" / assignment,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    course_dir.write_config(root, due.policy)
    course_dir.copy_autotests(source_root.parent, root)
    if regrade and (out / "gradebook.db").is_file():
        shutil.copy(out / "gradebook.db", db)  # keep everyone else's record
    done = nbgrader(["generate_assignment", assignment, "--force"], root, source="source", release="release", db=db)
    if done.returncode != 0:
        raise GradingError(f"could not release {assignment} for grading:\n{done.stdout}{done.stderr}")
    source = read_source(source_root, assignment, root / "release" / assignment)
    return _Course(root, assignment, source, _max_score(db, assignment))


def _check_and_stage(folder: Path, students: list[str],
                     course: _Course) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    """Check each student's folder: "failed" with its reason for those that cannot be graded, the
    others (repaired) copied to ``submitted/``. Returns (status so far, notes per student,
    students to run)."""
    status, notes, runnable = {}, {}, []
    for s in students:
        reason, notes[s], repaired = check_submission(folder / s, s, course.assignment, course.source)
        reason = reason or late_work.timestamp_problem(folder / s / course.assignment, course.assignment)
        if reason:
            status[s], notes[s] = "failed", [reason]
        else:
            stage(folder / s / course.assignment, course.root / "submitted" / s / course.assignment, repaired)
            runnable.append(s)
    return status, notes, runnable


def _autograde(course: _Course, runnable: list[str], status: dict[str, str], notes: dict[str, list[str]],
               total: int, *, limits: Limits, unsafe: bool, jobs: int, zygote: bool, progress: bool) -> None:
    """Grade ``runnable`` in the worker pool, recording each one's status and notes, with a
    progress bar over all ``total`` students."""
    bar = tqdm(total=total, desc=f"grading {course.assignment}", unit="student", disable=not progress)
    failed = len(status)
    bar.update(failed)
    for result in worker_results(course.root, course.assignment, limits, unsafe, runnable, jobs, zygote):
        s = result["student"]
        status[s], notes[s] = _record(course.root, result, course.assignment, limits, notes[s])
        failed += status[s] != "graded"
        bar.update(1)
        bar.set_postfix(failed=failed, refresh=False)
    bar.close()


def _keep_manual_grades(course: _Course, out: Path, previous: dict[str, gradebook.StudentRecord],
                        status: dict[str, str], notes: dict[str, list[str]], policy: LatePolicy) -> None:
    """Write the manual grades recorded in ``out`` before the run back into the run's gradebook
    (flagged for review where the submission changed), recompute the late penalties, and render
    those students' feedback again."""
    for s in sorted(status):
        if status[s] != "graded":  # a failed regrade leaves no old record behind
            gradebook.drop_submission(course.db, course.assignment, s)
    again = []
    for s, record in sorted(previous.items()):
        if status[s] != "graded":
            notes[s].append("its earlier manual grades were dropped: this submission could not be graded")
            continue
        changed = course_dir.notebooks_changed(out / "submitted" / s / course.assignment,
                                               course.root / "submitted" / s / course.assignment)
        notes[s] += gradebook.restore_manual(course.db, course.assignment, s, record, changed)
        again.append(s)
    gradebook.assign_penalties(course.db, course.assignment, [s for s in status if status[s] == "graded"], policy)
    for s in feedback.render(course.root, course.assignment, again):
        notes[s].append("feedback could not be rendered")


# -- one student's result --------------------------------------------------------------------


def _record(course: Path, result: dict, assignment: str, limits: Limits, notes: list[str]) -> tuple[str, list[str]]:
    """(status, notes) of one worker result."""
    student = result["student"]
    graded = course / "autograded" / student / assignment
    if not result["success"] or not graded.is_dir():
        return "failed", [_failure(result.get("log", ""))]
    notes = notes + _executed_notes(graded, limits)
    if not (result["feedback"] and (course / "feedback" / student / assignment).is_dir()):
        notes.append("feedback could not be rendered")
    return "graded", notes


def _executed_notes(folder: Path, limits: Limits) -> list[str]:
    """What went wrong while the graded notebooks ran, one short phrase each."""
    notes = []
    gib = limits.memory_bytes / 2**30
    for path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, c in enumerate(nb.cells):
            name = c.metadata.get("nbgrader", {}).get("grade_id") or f"#{i + 1}"
            enames = {o.get("ename") for o in c.get("outputs", []) if o.get("output_type") == "error"}
            texts = " ".join(str(o.get("evalue", "")) for o in c.get("outputs", []))
            if "CellTimeoutError" in enames:
                notes.append(f"timed out after {limits.cell_timeout} s in cell {name}")
            if "MemoryError" in enames or "can't allocate memory" in texts or "not enough memory" in texts:
                notes.append(f"memory limit {fmt(gib)} GiB exceeded in cell {name}")
            if "DeadKernelError" in enames:
                notes.append(f"the kernel died in cell {name}; later cells did not run and score 0")
    return notes


def _max_score(db: Path, assignment: str) -> float:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        return float(gb.find_assignment(assignment).max_score)


def _failure(log: str) -> str:
    found = re.search(r"SandboxFailure: (.+)", log)
    if found:
        return found.group(1).strip()
    if CRASHED in log:
        return "the grading worker crashed on this submission"
    return "autograding failed (nbgrader could not process the notebook)"


def main(argv: list[str] | None = None) -> int:
    defaults = Limits()
    parser = argparse.ArgumentParser(prog="python -m course_lib.grading",
                                     description="Autograde a folder of submissions with nbgrader, sandboxed.")
    parser.add_argument("--submissions", required=True, type=Path,
                        help="folder (or .zip) of <student>/<assignment>/<notebook>.ipynb")
    parser.add_argument("--assignment", required=True, help="assignment name (a folder of solutions/)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--student", default=None, help="regrade only this student")
    parser.add_argument("--jobs", type=int, default=None, help="submissions at once (default: CPU cores)")
    parser.add_argument("--unsafe", action="store_true", help="grade without bubblewrap isolation")
    parser.add_argument("--no-zygote", action="store_true",
                        help="start every submission's sandbox from scratch (slower; no shared pre-imported Python)")
    parser.add_argument("--source", type=Path, default=REPO / SOURCE_DIR,
                        help="folder of nbgrader source assignments (default: solutions/)")
    parser.add_argument("--cell-timeout", type=int, default=defaults.cell_timeout,
                        help=f"seconds one cell may run (default {defaults.cell_timeout})")
    parser.add_argument("--wall-timeout", type=int, default=defaults.wall_timeout,
                        help=f"seconds one submission may run (default {defaults.wall_timeout})")
    parser.add_argument("--memory-gib", type=float, default=defaults.memory_bytes / 2**30,
                        help=f"memory per sandboxed process, GiB (default {defaults.memory_bytes / 2**30:g})")
    parser.add_argument("--max-processes", type=int, default=defaults.max_processes,
                        help=f"processes per submission (default {defaults.max_processes})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--duedate", default=None,
                        help="due date, e.g. '2026-03-01 23:59:00 Europe/Berlin' (default: the one OUT recorded)")
    parser.add_argument("--extensions", type=Path, default=None, help="CSV student,hours of extensions")
    parser.add_argument("--late", choices=late_work.METHODS, default=None,
                        help="late penalty: none, zero, or per_hour (default: the one OUT recorded, else none)")
    parser.add_argument("--penalty-per-hour", type=float, default=None,
                        help="points per hour (or part of one) late with --late per_hour (default 1)")
    args = parser.parse_args(argv)
    try:
        limits = Limits(cell_timeout=args.cell_timeout, wall_timeout=args.wall_timeout,
                        memory_bytes=int(args.memory_gib * 2**30), max_processes=args.max_processes)
        if args.unsafe:
            print("warning: grading WITHOUT a sandbox (UNSAFE=1): student code runs with your "
                  "permissions, can read solutions/ and write anywhere you can", file=sys.stderr)
        rows = grade_submissions(args.submissions, args.assignment, args.out, source_root=args.source,
                                 limits=limits, jobs=args.jobs, student=args.student,
                                 unsafe=args.unsafe, progress=not args.no_progress,
                                 zygote=not args.no_zygote, duedate=args.duedate, extensions=args.extensions,
                                 late=args.late, per_hour=args.penalty_per_hour)
    except (GradingError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    graded = [r for r in rows if r.status == "graded"]
    print(f"{len(graded)} graded, {len(rows) - len(graded)} failed -> {args.out / 'grades.csv'}")
    for r in rows:
        if r.status != "graded":
            print(f"  {r.student}: {r.reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
