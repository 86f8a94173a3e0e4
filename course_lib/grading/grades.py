"""``OUT/grades.csv``: one row per student folder, rebuilt from the gradebook.

A row's numbers come from ``OUT/gradebook.db`` (so manual scores entered in Formgrader count
as soon as anything rebuilds the file: ``make grade``, ``make feedback``, ``make export``);
what the grading run itself noticed (a repaired cell, a timeout, a failure) is kept in
``OUT/grading_state.json`` beside it, with the late policy. Columns:

``student, assignment, auto_score, manual_score, late_seconds, penalty, score, max_score,
status, reason``: ``score`` is the total, ``auto_score + manual_score - penalty``;
``manual_score`` is empty until a TA graded something by hand; ``reason`` lists the run's
notes, then what still awaits grading by hand (by kind) or review.

Examples:
    >>> GradeRow("alice", "ps1", 0.0, 6.0, "failed", "ps1.ipynb is not valid notebook JSON").as_csv()["score"]
    '0'
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from course_lib.grading import gradebook
from course_lib.grading.late import LatePolicy

CSV_COLUMNS = ("student", "assignment", "auto_score", "manual_score", "late_seconds", "penalty", "score",
               "max_score", "status", "reason")
STATE = "grading_state.json"


def fmt(x: float) -> str:
    """A number as grades.csv writes it: at most two decimals, no trailing zeros."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


@dataclass
class GradeRow:
    """One line of ``grades.csv`` (points; ``score`` is the total)."""

    student: str
    assignment: str
    score: float
    max_score: float
    status: str  # "graded" or "failed"
    reason: str = ""
    auto_score: float = 0.0
    manual_score: float | None = None
    late_seconds: float = 0.0
    penalty: float = 0.0

    def as_csv(self) -> dict[str, str]:
        return {"student": self.student, "assignment": self.assignment, "auto_score": fmt(self.auto_score),
                "manual_score": "" if self.manual_score is None else fmt(self.manual_score),
                "late_seconds": fmt(self.late_seconds), "penalty": fmt(self.penalty),
                "score": fmt(self.score), "max_score": fmt(self.max_score),
                "status": self.status, "reason": self.reason}


def read_state(out: Path) -> dict:
    """``{"assignment", "late": {...}, "students": {student: {"status", "notes"}}}``."""
    path = out / STATE
    if not path.is_file():
        return {"assignment": None, "late": LatePolicy().as_dict(), "students": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def write_state(out: Path, state: dict) -> None:
    (out / STATE).write_text(json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def policy_of(state: dict) -> LatePolicy:
    return LatePolicy(**state["late"])


def build_row(out: Path, assignment: str, student: str, entry: dict, max_score: float) -> GradeRow:
    """The row of ``student`` from the gradebook and the run's ``entry`` in the state."""
    if entry["status"] != "graded":
        return GradeRow(student, assignment, 0.0, max_score, entry["status"], "; ".join(entry["notes"]))
    s = gradebook.summary(out / "gradebook.db", assignment, student)
    notes = list(entry["notes"])
    notes += [n for n in (gradebook.review_note(s), gradebook.pending_note(s)) if n]
    return GradeRow(student, assignment, s.total, s.max_score, "graded", "; ".join(notes), s.auto_score,
                    s.manual_score, s.late_seconds, s.penalty)


def refresh(out: Path) -> list[GradeRow]:
    """Recompute the late penalties and rewrite ``out/grades.csv`` from the gradebook and the
    state (every student); returns the rows, sorted."""
    state = read_state(out)
    assignment = state["assignment"]
    if assignment is None or not (out / "gradebook.db").is_file():
        raise FileNotFoundError(f"{out} holds no graded class (run make grade first)")
    students = sorted(state["students"])
    graded = [s for s in students if state["students"][s]["status"] == "graded"]
    gradebook.assign_penalties(out / "gradebook.db", assignment, graded, policy_of(state))
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        max_score = float(gb.find_assignment(assignment).max_score)
    rows = [build_row(out, assignment, s, state["students"][s], max_score) for s in students]
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(r.as_csv() for r in rows)
    return rows
