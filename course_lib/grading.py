"""Autograde a folder of submissions with nbgrader and export grades and feedback.

Usage (``make grade`` calls this)::

    python -m course_lib.grading --submissions DIR --assignment NAME --out OUT

``DIR`` holds one folder per student: ``DIR/<student>/<assignment>/<notebook>.ipynb``.
The run works in a scratch nbgrader course directory (never in the repository):

1. ``source/<assignment>`` is copied from ``solutions/`` and released there with
   ``nbgrader generate_assignment``, which records every graded cell, its points and
   its checksum in a fresh gradebook;
2. each student's notebooks are checked (present, valid notebook JSON) and copied to
   ``submitted/<student>/<assignment>/``;
3. ``nbgrader autograde`` runs per student: test cells are restored from the source
   (hidden tests included), the notebook executes, scores go to the gradebook;
4. ``nbgrader generate_feedback`` renders each graded notebook to HTML.

Outputs under ``OUT``: ``grades.csv`` (one row per student folder: ``student,
assignment, score, max_score, status, reason``), ``feedback/<student>/<assignment>/
<notebook>.html`` and ``gradebook.db`` (nbgrader's record). ``score`` counts the
autograded points; written answers wait for manual grading (``reason`` says so).
``status`` is ``graded`` or ``failed`` (with a one-line reason). The command exits 0
when every student got a row.

This module grades honest submissions correctly; it does not sandbox student code.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from tqdm.auto import tqdm

from course_lib.release import REPO, SOURCE_DIR, list_assignments, nbgrader, venv_environment

CSV_COLUMNS = ("student", "assignment", "score", "max_score", "status", "reason")
DEFAULT_CELL_TIMEOUT = 60
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


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


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _check_notebook(path: Path) -> str | None:
    """A one-line reason why ``path`` cannot be graded, or None if it can."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"{path.name} is not valid notebook JSON"
    if not isinstance(raw, dict) or "cells" not in raw:
        return f"{path.name} is not valid notebook JSON"
    try:
        nbformat.validate(nbformat.reads(json.dumps(raw), as_version=4))
    except Exception:  # nbformat raises several kinds of validation errors
        return f"{path.name} is not a valid Jupyter notebook (nbformat 4)"
    return None


def _failure_reason(log: str, cell_timeout: int) -> str:
    """Turn nbgrader's log of a failed autograde into one deterministic line."""
    if "CellTimeoutError" in log or "Timeout waiting for execute reply" in log or "timed out" in log.lower():
        return f"timed out: a cell ran longer than {cell_timeout} s"
    if "Kernel died" in log or "DeadKernelError" in log:
        return "the kernel died while running the notebook (out of memory or a crash)"
    if "is not valid" in log or "NotJSONError" in log:
        return "not a valid notebook"
    return "autograding failed (nbgrader could not execute the notebook)"


def _timed_out_cells(folder: Path) -> list[str]:
    """Names of the cells (grade_id, else "#index") of the executed notebooks that hit the timeout."""
    names = []
    for path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, c in enumerate(nb.cells):
            if any(o.get("ename") == "CellTimeoutError" for o in c.get("outputs", [])):
                names.append(c.metadata.get("nbgrader", {}).get("grade_id") or f"#{i + 1}")
    return names


def _scores(db: Path, assignment: str, student: str) -> tuple[float, float, float]:
    """(autograded score, max score, points awaiting manual grading) from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        sub = gb.find_submission(assignment, student)
        manual_pending = sum(g.max_score for nb in sub.notebooks for g in nb.grades
                             if g.auto_score is None and g.manual_score is None)
        return float(sub.score), float(sub.max_score), float(manual_pending)


def _max_score(db: Path, assignment: str) -> float:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        return float(gb.find_assignment(assignment).max_score)


def grade_submissions(submissions: Path, assignment: str, out: Path, *,
                      source_root: Path = REPO / SOURCE_DIR,
                      cell_timeout: int = DEFAULT_CELL_TIMEOUT,
                      progress: bool = True) -> list[GradeRow]:
    """Autograde every student folder in ``submissions`` and write ``out``.

    Args:
        submissions: folder of ``<student>/<assignment>/<notebook>.ipynb``.
        assignment: the assignment's name, a folder under ``source_root``.
        out: output folder (created); ``grades.csv``, ``feedback/``, ``gradebook.db``.
        source_root: nbgrader source folders (default the repository's ``solutions/``).
        cell_timeout: seconds one cell may run before the submission fails.
        progress: show a tqdm bar.

    Returns:
        One :class:`GradeRow` per student folder, sorted by student.

    Raises:
        ValueError: if ``submissions`` is not a folder or ``assignment`` is unknown.
        RuntimeError: if the assignment itself cannot be released (a broken source).
    """
    submissions, out = Path(submissions), Path(out)
    if not submissions.is_dir():
        raise ValueError(f"submissions must be a folder of <student>/{assignment}/*.ipynb, "
                         f"got {str(submissions)!r}")
    if assignment not in list_assignments(source_root):
        raise ValueError(f"assignment must be one of {list_assignments(source_root)}, got {assignment!r}")
    students = sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    expected = sorted(p.name for p in (source_root / assignment).glob("*.ipynb"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[GradeRow] = []
    with tempfile.TemporaryDirectory(prefix="course_grade_") as tmp:
        course = Path(tmp)
        db = course / "gradebook.db"
        shutil.copytree(source_root / assignment, course / "source" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        done = nbgrader(["generate_assignment", assignment, "--force"], course,
                        source="source", release="release", db=db)
        if done.returncode != 0:
            raise RuntimeError(f"could not release {assignment} for grading:\n{done.stdout}{done.stderr}")
        max_score = _max_score(db, assignment)
        rows = _grade_all(course, db, submissions, students, assignment, expected, max_score,
                          cell_timeout, out, progress)
        shutil.copy(db, out / "gradebook.db")
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(r.as_csv() for r in rows)
    return rows


def _precheck(folder: Path, student: str, assignment: str, expected: list[str]) -> str | None:
    """Why a student's folder cannot be graded (one line), or None when it can."""
    if not STUDENT_ID.match(student):
        return "student folder name must be letters, digits, '.', '_', '@' or '-'"
    work = folder / assignment
    if not work.is_dir():
        return f"no folder {assignment}/ inside the student's folder"
    for name in expected:
        if not (work / name).is_file():
            return f"notebook {name} is missing"
        reason = _check_notebook(work / name)
        if reason:
            return reason
    return None


def _run_worker(course: Path, assignment: str, cell_timeout: int, students: list[str]):
    """Yield each student's result line from autograde workers, in order.

    If a worker dies, the student it was grading is reported as failed and a new
    worker takes the rest, so one submission can never cost another its grade.
    """
    pending = list(students)
    while pending:
        proc = subprocess.Popen([sys.executable, "-m", "course_lib.autograde_worker", str(course),
                                 assignment, str(cell_timeout), *pending],
                                cwd=course, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, env=venv_environment())
        for line in proc.stdout:
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue  # stray output, not a result line
            if result.get("student") == pending[0]:
                pending.pop(0)
                yield result
        proc.wait()
        if pending:
            yield {"student": pending.pop(0), "success": False, "feedback": False,
                   "log": "the grading worker crashed"}


def _grade_all(course: Path, db: Path, submissions: Path, students: list[str], assignment: str,
               expected: list[str], max_score: float, cell_timeout: int, out: Path,
               progress: bool) -> list[GradeRow]:
    rows: dict[str, GradeRow] = {}
    runnable = []
    for student in students:
        reason = _precheck(submissions / student, student, assignment, expected)
        if reason:
            rows[student] = GradeRow(student, assignment, 0.0, max_score, "failed", reason)
        else:
            shutil.copytree(submissions / student / assignment, course / "submitted" / student / assignment,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
            runnable.append(student)
    bar = tqdm(total=len(students), desc=f"grading {assignment}", unit="student", disable=not progress)
    bar.update(len(students) - len(runnable))
    failed = len(rows)
    bar.set_postfix(failed=failed, refresh=False)
    for result in _run_worker(course, assignment, cell_timeout, runnable):
        row = _record(course, db, result, assignment, max_score, cell_timeout, out)
        rows[row.student] = row
        failed += row.status != "graded"
        bar.update(1)
        bar.set_postfix(failed=failed, refresh=False)
    bar.close()
    return [rows[s] for s in students]


def _record(course: Path, db: Path, result: dict, assignment: str, max_score: float,
            cell_timeout: int, out: Path) -> GradeRow:
    """Turn one worker result into a row, and copy the student's feedback to ``out``."""
    student = result["student"]
    if not result["success"] or not (course / "autograded" / student / assignment).is_dir():
        return GradeRow(student, assignment, 0.0, max_score, "failed",
                        _failure_reason(result.get("log", ""), cell_timeout))
    score, total, pending = _scores(db, assignment, student)
    reasons = []
    timed_out = _timed_out_cells(course / "autograded" / student / assignment)
    if timed_out:
        reasons.append(f"timed out after {cell_timeout} s in cell {', '.join(timed_out)} (later cells still ran)")
    if pending:
        unit = "point" if pending == 1 else "points"
        reasons.append(f"{_fmt(pending)} {unit} of written answers await manual grading")
    made = course / "feedback" / student / assignment
    if result["feedback"] and made.is_dir():
        dest = out / "feedback" / student / assignment
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(made, dest)
    else:
        reasons.append("feedback could not be rendered")
    return GradeRow(student, assignment, score, total, "graded", "; ".join(reasons))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.grading",
                                     description="Autograde a folder of submissions with nbgrader.")
    parser.add_argument("--submissions", required=True, type=Path,
                        help="folder of <student>/<assignment>/<notebook>.ipynb")
    parser.add_argument("--assignment", required=True, help="assignment name (a folder of solutions/)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--source", type=Path, default=REPO / SOURCE_DIR,
                        help="folder of nbgrader source assignments (default: solutions/)")
    parser.add_argument("--cell-timeout", type=int, default=DEFAULT_CELL_TIMEOUT,
                        help=f"seconds one cell may run (default {DEFAULT_CELL_TIMEOUT})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        rows = grade_submissions(args.submissions, args.assignment, args.out, source_root=args.source,
                                 cell_timeout=args.cell_timeout, progress=not args.no_progress)
    except (ValueError, RuntimeError) as err:
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
