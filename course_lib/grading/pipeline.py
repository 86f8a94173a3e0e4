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
4. ``nbgrader generate_feedback`` renders the graded notebook (hidden test code removed).

Outputs under ``OUT``: ``grades.csv`` (one row per student folder, sorted: ``student,
assignment, score, max_score, status, reason``), ``feedback/<student>/<assignment>/*.html``
and ``gradebook.db``, nbgrader's record. ``--student ID`` regrades one student: the
others' rows, feedback and gradebook entries are kept as they are. Reasons are one
deterministic line each, so a rerun writes the same CSV. The command exits 0 when every
student got a row, 2 when the run itself could not start.

:func:`grade_submissions` reads as these steps, each a function below it, in order:
check the arguments, open the submissions, choose the students, release the assignment
for grading, check and stage each submission, autograde, keep the gradebook, write
``grades.csv``.
"""

from __future__ import annotations

import argparse
import csv
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
from course_lib.grading import sandbox
from course_lib.grading.pool import CRASHED, worker_results
from course_lib.grading.release import REPO, SOURCE_DIR, list_assignments, nbgrader
from course_lib.grading.sandbox import Limits
from course_lib.grading.submissions import (AssignmentSource, GradingError, check_submission,
                                            open_submissions, read_source, stage, student_folders)
from course_lib.grading.submissions import MAX_NOTEBOOK_BYTES, MAX_ZIP_BYTES, STUDENT_ID  # noqa: F401  (were here)

__all__ = ["CSV_COLUMNS", "GradeRow", "GradingError", "grade_submissions", "main"]

CSV_COLUMNS = ("student", "assignment", "score", "max_score", "status", "reason")


@dataclass
class GradeRow:
    """One line of ``grades.csv``."""

    student: str
    assignment: str
    score: float
    max_score: float
    status: str  # "graded" or "failed"
    reason: str = ""

    def as_csv(self) -> dict[str, str]:
        return {"student": self.student, "assignment": self.assignment,
                "score": _fmt(self.score), "max_score": _fmt(self.max_score),
                "status": self.status, "reason": self.reason}


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


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def grade_submissions(submissions: Path, assignment: str, out: Path, *,
                      source_root: Path = REPO / SOURCE_DIR, limits: Limits = Limits(),
                      jobs: int | None = None, student: str | None = None, unsafe: bool = False,
                      progress: bool = True, zygote: bool = True) -> list[GradeRow]:
    """Autograde every student folder in ``submissions`` (or only ``student``) into ``out``.

    Args:
        submissions: folder (or .zip) of ``<student>/<assignment>/<notebook>.ipynb``.
        assignment: the assignment's name, a folder under ``source_root``.
        out: output folder: ``grades.csv``, ``feedback/``, ``gradebook.db``.
        source_root: nbgrader source folders (default the repository's ``solutions/``).
        limits: the sandbox's resource caps (:class:`course_lib.grading.sandbox.Limits`).
        jobs: submissions graded at once; default (None or 0) the number of CPU cores.
        student: regrade only this student, keeping everything else in ``out``.
        unsafe: run without bubblewrap (resource limits only, no isolation).
        progress: show a tqdm bar (students done, failed, ETA).
        zygote: fork each submission's sandbox from one pre-imported Python per worker
            (:class:`course_lib.grading.sandbox.Zygote`); False starts a sandbox from scratch for each.

    Returns:
        The rows of the students graded in this run, sorted by student.

    Raises:
        GradingError: an unknown assignment or student, bubblewrap missing without ``unsafe``,
            unreadable submissions or a broken source.
        course_lib._checks.ArgumentError: ``jobs`` not a count, or a flag not a bool.

    Examples:
        >>> rows = grade_submissions("submissions.zip", "ps1_gd_sgd", "grading_out")  # doctest: +SKIP
        >>> rows[0].status, rows[0].score  # doctest: +SKIP
        ('graded', 10.0)
    """
    submissions, out = Path(submissions), Path(out)
    jobs = _check_arguments(assignment, source_root, jobs, unsafe, progress, zygote)
    with tempfile.TemporaryDirectory(prefix="course_grade_") as tmp:
        tmp = Path(tmp)
        folder = open_submissions(submissions, tmp, assignment)
        students = _students_to_grade(folder, student)
        course = _release_for_grading(source_root, assignment, tmp / "course", out, regrade=student is not None)
        rows, notes, runnable = _check_and_stage(folder, students, course)
        _autograde(course, runnable, rows, notes, out, len(students), limits=limits, unsafe=unsafe,
                   jobs=jobs, zygote=zygote, progress=progress)
        _keep_gradebook(course, out)
    _write_grades(out, rows, regrade=student is not None)
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


def _students_to_grade(folder: Path, student: str | None) -> list[str]:
    """Every student folder, or only ``student``'s (which must be there)."""
    everyone = student_folders(folder)
    if student is not None and student not in everyone:
        raise GradingError(f"student {student!r} has no folder in {str(folder)!r}")
    return [student] if student is not None else everyone


def _release_for_grading(source_root: Path, assignment: str, root: Path, out: Path, regrade: bool) -> _Course:
    """A scratch course directory at ``root`` where ``nbgrader generate_assignment`` released the
    source: a fresh gradebook records every graded cell (a regrade starts from ``out``'s, to keep
    everyone else's record)."""
    db = root / "gradebook.db"
    shutil.copytree(source_root / assignment, root / "source" / assignment,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    if regrade and (out / "gradebook.db").is_file():
        shutil.copy(out / "gradebook.db", db)  # keep everyone else's record
    done = nbgrader(["generate_assignment", assignment, "--force"], root, source="source", release="release", db=db)
    if done.returncode != 0:
        raise GradingError(f"could not release {assignment} for grading:\n{done.stdout}{done.stderr}")
    source = read_source(source_root, assignment, root / "release" / assignment)
    return _Course(root, assignment, source, _max_score(db, assignment))


def _check_and_stage(folder: Path, students: list[str],
                     course: _Course) -> tuple[dict[str, GradeRow], dict[str, list[str]], list[str]]:
    """Check each student's folder: a failed row for those that cannot be graded, the others
    (repaired) copied to ``submitted/``. Returns (rows so far, notes per student, students to run)."""
    rows, notes, runnable = {}, {}, []
    for s in students:
        reason, notes[s], repaired = check_submission(folder / s, s, course.assignment, course.source)
        if reason:
            rows[s] = GradeRow(s, course.assignment, 0.0, course.max_score, "failed", reason)
        else:
            stage(folder / s / course.assignment, course.root / "submitted" / s / course.assignment, repaired)
            runnable.append(s)
    return rows, notes, runnable


def _autograde(course: _Course, runnable: list[str], rows: dict[str, GradeRow], notes: dict[str, list[str]],
               out: Path, total: int, *, limits: Limits, unsafe: bool, jobs: int, zygote: bool,
               progress: bool) -> None:
    """Grade ``runnable`` in the worker pool, adding a row to ``rows`` for each and copying its
    feedback to ``out``, with a progress bar over all ``total`` students."""
    bar = tqdm(total=total, desc=f"grading {course.assignment}", unit="student", disable=not progress)
    failed = len(rows)
    bar.update(failed)
    for result in worker_results(course.root, course.assignment, limits, unsafe, runnable, jobs, zygote):
        s = result["student"]
        rows[s] = _record(course.root, course.db, result, course.assignment, course.max_score, limits, out, notes[s])
        failed += rows[s].status != "graded"
        bar.update(1)
        bar.set_postfix(failed=failed, refresh=False)
    bar.close()


def _keep_gradebook(course: _Course, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(course.db, out / "gradebook.db")


def _write_grades(out: Path, rows: dict[str, GradeRow], regrade: bool) -> None:
    """``out/grades.csv``: this run's rows (a regrade keeps the other students' rows), sorted."""
    table = _read_csv(out / "grades.csv") if regrade else {}
    table.update({s: r.as_csv() for s, r in rows.items()})
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(table[s] for s in sorted(table))


# -- one student's result --------------------------------------------------------------------


def _record(course: Path, db: Path, result: dict, assignment: str, max_score: float,
            limits: Limits, out: Path, notes: list[str]) -> GradeRow:
    """Turn one worker result into a row, and copy the student's feedback to ``out``."""
    student = result["student"]
    graded = course / "autograded" / student / assignment
    if not result["success"] or not graded.is_dir():
        return GradeRow(student, assignment, 0.0, max_score, "failed", _failure(result.get("log", "")))
    score, total, pending = _scores(db, assignment, student)
    reasons = notes + _executed_notes(graded, limits)
    if pending:
        unit = "point" if pending == 1 else "points"
        reasons.append(f"{_fmt(pending)} {unit} of written answers await manual grading")
    made = course / "feedback" / student / assignment
    dest = out / "feedback" / student / assignment
    if dest.exists():
        shutil.rmtree(dest)
    if result["feedback"] and made.is_dir():
        shutil.copytree(made, dest)
    else:
        reasons.append("feedback could not be rendered")
    return GradeRow(student, assignment, score, total, "graded", "; ".join(reasons))


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
                notes.append(f"memory limit {_fmt(gib)} GiB exceeded in cell {name}")
            if "DeadKernelError" in enames:
                notes.append(f"the kernel died in cell {name}; later cells did not run and score 0")
    return notes


def _scores(db: Path, assignment: str, student: str) -> tuple[float, float, float]:
    """(autograded score, max score, points awaiting manual grading) from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        sub = gb.find_submission(assignment, student)
        pending = sum(g.max_score for nb in sub.notebooks for g in nb.grades
                      if g.auto_score is None and g.manual_score is None)
        return float(sub.score), float(sub.max_score), float(pending)


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


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


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
                                 zygote=not args.no_zygote)
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
