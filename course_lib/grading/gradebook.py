"""What a TA records by hand in the gradebook, kept across reruns, and each student's totals.

A full ``make grade`` starts from a fresh gradebook (the source may have changed), and a
``STUDENT=`` regrade autogrades that student again: both would lose what a TA entered in
Formgrader. So before a run :func:`manual_record` reads, for the students about to be
graded, every manual score, extra credit and comment (and Formgrader's "flagged" marks) from
``OUT/gradebook.db``, and after it :func:`restore_manual` writes them back, cell by cell
(nbgrader's ``Grade`` and ``Comment`` rows, found by notebook and ``grade_id``). When the
student's submitted notebooks changed since, the manual scores are still written back, but
marked ``needs_manual_grade`` (Formgrader's "needs review"), and the row's reason says so.

:func:`summary` reads one student's totals for ``grades.csv`` (autograded and manual points,
seconds late, penalty, total, what still awaits grading by hand, by kind);
:func:`assign_penalties` recomputes the late penalties from the current scores.

Examples:
    >>> _unit(1.0), _unit(2.5)
    ('point', 'points')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from course_lib.grading.late import LatePolicy

# what awaits grading by hand, by the kind of cell, as grades.csv names it
KINDS = {"markdown": "written answers", "code": "manually graded code", "task": "tasks"}


@dataclass
class ManualEntry:
    """One cell's hand-entered grade and comment (None where nothing was entered)."""

    manual_score: float | None = None
    extra_credit: float | None = None
    needs_manual_grade: bool = False
    comment: str | None = None


@dataclass
class StudentRecord:
    """What a TA entered for one student: cell entries by (notebook, grade_id), and the
    notebooks flagged in Formgrader."""

    cells: dict[tuple[str, str], ManualEntry] = field(default_factory=dict)
    flagged: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.cells or self.flagged)


@dataclass
class Summary:
    """One student's totals (points), as ``grades.csv`` shows them."""

    auto_score: float
    manual_score: float | None  # None until something was graded by hand
    late_seconds: float
    penalty: float
    total: float  # auto_score + manual_score (+ extra credit) - penalty
    max_score: float
    pending: dict[str, float]  # kind of cell -> points awaiting grading by hand
    review: float  # points graded by hand before the submission changed, to review


def _unit(points: float) -> str:
    return "point" if points == 1 else "points"


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _kind(grade) -> str:
    from nbgrader.api import TaskCell

    return "task" if isinstance(grade.cell, TaskCell) else grade.cell.cell_type


def _submissions(gb, assignment: str, students: list[str]):
    """``(student, submission)`` for each student who has a submission of ``assignment`` in ``gb``."""
    from nbgrader.api import MissingEntry

    for student in students:
        try:
            yield student, gb.find_submission(assignment, student)
        except MissingEntry:
            continue


def manual_record(db: Path, assignment: str, students: list[str]) -> dict[str, StudentRecord]:
    """The hand-entered grades of ``students`` in the gradebook at ``db`` (an earlier run's;
    missing: none), by student."""
    from nbgrader.api import Gradebook

    result: dict[str, StudentRecord] = {}
    if not db.is_file():
        return result
    with Gradebook(f"sqlite:///{db}") as gb:
        for s, sub in _submissions(gb, assignment, students):
            record = StudentRecord(flagged={nb.name for nb in sub.notebooks if nb.flagged})
            for nb in sub.notebooks:
                for g in nb.grades:
                    if g.manual_score is not None or g.extra_credit is not None:
                        record.cells[(nb.name, g.name)] = ManualEntry(g.manual_score, g.extra_credit,
                                                                      bool(g.needs_manual_grade))
                for c in nb.comments:
                    if c.manual_comment is not None:
                        record.cells.setdefault((nb.name, c.name), ManualEntry()).comment = c.manual_comment
            if record:
                result[s] = record
    return result


def restore_manual(db: Path, assignment: str, student: str, record: StudentRecord, changed: bool) -> list[str]:
    """Write ``record`` back into the gradebook at ``db`` for ``student``; with ``changed`` (the
    submission is not the one graded by hand) every restored score is flagged for review.
    Returns notes for the TA (cells that no longer exist, the change)."""
    from nbgrader.api import Gradebook, MissingEntry

    notes = []
    with Gradebook(f"sqlite:///{db}") as gb:
        for nb in gb.find_submission(assignment, student).notebooks:
            nb.flagged = nb.flagged or nb.name in record.flagged
        for (notebook, cell), entry in sorted(record.cells.items()):
            try:
                if entry.manual_score is not None or entry.extra_credit is not None:
                    grade = gb.find_grade(cell, notebook, assignment, student)
                    grade.manual_score, grade.extra_credit = entry.manual_score, entry.extra_credit
                    grade.needs_manual_grade = changed or entry.needs_manual_grade
                if entry.comment is not None:
                    gb.find_comment(cell, notebook, assignment, student).manual_comment = entry.comment
            except MissingEntry:
                notes.append(f"the manual grade of cell {cell} was dropped: the assignment no longer has it")
        gb.db.commit()
    if changed and any(e.manual_score is not None for e in record.cells.values()):
        notes.append("the submission changed since it was graded by hand: the manual scores are kept, "
                     "flagged for review in Formgrader")
    return notes


def drop_submission(db: Path, assignment: str, student: str) -> None:
    """Remove ``student``'s submission from the gradebook (a regrade that failed)."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{db}") as gb:
        try:
            gb.remove_submission(assignment, student)
        except MissingEntry:
            pass


def assign_penalties(db: Path, assignment: str, students: list[str], policy: LatePolicy) -> None:
    """Each notebook's late penalty from its current score (manual scores included), as
    nbgrader's ``AssignLatePenalties`` computes it at autograde time."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        for _, sub in _submissions(gb, assignment, students):
            late = sub.total_seconds_late
            for nb in sub.notebooks:
                nb.late_submission_penalty = policy.penalty(float(nb.score), late)
        gb.db.commit()


def summary(db: Path, assignment: str, student: str) -> Summary:
    """``student``'s totals in the gradebook at ``db`` (a missing notebook's cells were
    scored 0 by nbgrader's autograde, so they await nothing)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        sub = gb.find_submission(assignment, student)
        auto = manual = review = 0.0
        graded_by_hand = False
        pending: dict[str, float] = {}
        for nb in sub.notebooks:
            for g in nb.grades:
                if g.manual_score is not None:
                    graded_by_hand = True
                    manual += g.manual_score
                    review += g.max_score if g.needs_manual_grade else 0.0
                elif g.auto_score is not None:
                    auto += g.auto_score
                else:  # ungraded: nbgrader counts no extra credit here either
                    kind = KINDS[_kind(g)]
                    pending[kind] = pending.get(kind, 0.0) + float(g.max_score)
                    continue
                if g.extra_credit is not None:
                    graded_by_hand = True
                    manual += g.extra_credit
        penalty = float(sub.late_submission_penalty or 0.0)
        return Summary(auto, manual if graded_by_hand else None, float(sub.total_seconds_late), penalty,
                       float(sub.score) - penalty, float(sub.max_score), pending, review)


def pending_note(s: Summary) -> str | None:
    """``"3 points of written answers and 2 points of tasks await manual grading"``, or None."""
    parts = [f"{_fmt(p)} {_unit(p)} of {kind}" for kind, p in s.pending.items() if p > 0]
    if not parts:
        return None
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{listed} await manual grading"


def review_note(s: Summary) -> str | None:
    """What the TA should look at again, or None."""
    if s.review <= 0:
        return None
    return f"{_fmt(s.review)} {_unit(s.review)} graded by hand await review in Formgrader"
