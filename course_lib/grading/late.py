"""Due dates, extensions and late penalties, with nbgrader's semantics.

* The due date (``DUEDATE=`` / ``--duedate``) is the gradebook's ``Assignment.duedate``; a
  student's extension (hours, from a small CSV ``student,hours``) is the gradebook's
  ``SubmittedAssignment.extension``. nbgrader computes ``total_seconds_late`` from them and
  the submission's time.
* The submission's time is nbgrader's: ``<student>/<assignment>/timestamp.txt``, read with
  ``nbgrader.utils.parse_utc`` (an empty file means "no time": never late). An LMS zip
  without one gets one from its newest entry's time (zip entries carry no time zone: read as
  UTC). A file nbgrader could not read is a reason naming it (:func:`timestamp_problem`);
  nbgrader itself stops the whole run.
* The penalty follows nbgrader's ``LateSubmissionPlugin``: ``none`` (no penalty), ``zero``
  (penalty = the notebook's score), or :class:`PerHourPenalty` (``per_hour`` points for every
  hour or part of an hour late), each capped to the notebook's score as nbgrader's
  ``AssignLatePenalties`` caps it. Penalties are computed per notebook on its score,
  manual scores included
  (:func:`course_lib.grading.gradebook.assign_penalties`, run again after manual grading).

Examples:
    >>> policy = LatePolicy(method="per_hour", per_hour=2.0)
    >>> policy.penalty(score=5.0, seconds_late=3601.0)  # two hours started, 2 points each
    4.0
    >>> LatePolicy(method="zero").penalty(score=5.0, seconds_late=1.0)
    5.0
    >>> LatePolicy().penalty(score=5.0, seconds_late=99999.0) is None
    True
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from nbgrader.plugins import BasePlugin, LateSubmissionPlugin
from traitlets import Float

from course_lib import _checks

METHODS = ("none", "zero", "per_hour")
TIMESTAMP = "timestamp.txt"


class GradingInputError(ValueError):
    """A due date or an extensions file that cannot be read; the message names it."""


class PerHourPenalty(BasePlugin):
    """nbgrader late-submission plugin: ``points_per_hour`` points per hour or part of an hour
    late (``AssignLatePenalties`` caps the penalty to the notebook's score)."""

    points_per_hour = Float(1.0, help="points taken per hour (or part of an hour) late").tag(config=True)

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float) -> float:
        return self.points_per_hour * math.ceil(total_seconds_late / 3600)


@dataclass(frozen=True)
class LatePolicy:
    """How late work is scored: ``method`` one of ``none``, ``zero``, ``per_hour`` (then
    ``per_hour`` points per hour or part of one, >= 0)."""

    method: str = "none"
    per_hour: float = 1.0

    def __post_init__(self) -> None:
        _checks.choice(self.method, "late", METHODS)
        object.__setattr__(self, "per_hour", _checks.number(self.per_hour, "per_hour", ge=0))

    def plugin(self) -> BasePlugin:
        """The nbgrader plugin with this policy."""
        if self.method == "per_hour":
            return PerHourPenalty(points_per_hour=self.per_hour)
        return LateSubmissionPlugin(penalty_method=self.method)

    def penalty(self, score: float, seconds_late: float) -> float | None:
        """The penalty of a notebook scoring ``score`` submitted ``seconds_late`` seconds late
        (None: no penalty), capped to ``[0, score]`` as nbgrader caps it."""
        if seconds_late <= 0:
            return None
        raw = self.plugin().late_submission_penalty("", score, seconds_late)
        return None if raw is None else min(max(float(raw), 0.0), score)

    def nbgrader_config(self) -> str:
        """Lines of an ``nbgrader_config.py`` that give nbgrader's autograde this policy."""
        if self.method == "per_hour":
            return ("c.AssignLatePenalties.plugin_class = 'course_lib.grading.late.PerHourPenalty'\n"
                    f"c.PerHourPenalty.points_per_hour = {self.per_hour!r}\n")
        return f"c.LateSubmissionPlugin.penalty_method = {self.method!r}\n"

    def as_dict(self) -> dict:
        return {"method": self.method, "per_hour": self.per_hour}


def parse_time(text: str, what: str) -> dt.datetime:
    """``text`` as nbgrader reads a time (naive UTC); :class:`GradingInputError` naming ``what``."""
    from nbgrader.utils import parse_utc

    try:
        return parse_utc(text.strip())
    except (ValueError, OverflowError) as err:
        raise GradingInputError(f"{what} is not a date and time nbgrader can read: {text.strip()[:60]!r}") from err


def timestamp_problem(folder: Path, assignment: str) -> str | None:
    """Why nbgrader could not read the submission time in ``folder`` (a student's assignment
    folder), or None (no file, an empty one, or a readable time)."""
    path = folder / TIMESTAMP
    if not path.is_file() or path.is_symlink():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return f"{assignment}/{TIMESTAMP} is not text"
    if not text.strip():
        return None
    try:
        parse_time(text, f"{assignment}/{TIMESTAMP}")
    except GradingInputError as err:
        return str(err)
    return None


def zip_time(date_time: tuple[int, int, int, int, int, int]) -> str:
    """A zip entry's time as a ``timestamp.txt`` line (zip times carry no zone: read as UTC)."""
    return dt.datetime(*date_time).strftime("%Y-%m-%d %H:%M:%S UTC")


def read_extensions(path: Path) -> dict[str, dt.timedelta]:
    """Extensions from a CSV with columns ``student,hours`` (hours a number >= 0)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"student", "hours"} <= set(reader.fieldnames):
                raise GradingInputError(f"extensions file {path.name} must have the columns student,hours")
            result = {}
            for line, row in enumerate(reader, start=2):
                try:
                    hours = float(row["hours"])
                except (TypeError, ValueError):
                    hours = -1.0
                if not math.isfinite(hours) or hours < 0 or not row["student"]:
                    raise GradingInputError(f"extensions file {path.name}, line {line}: "
                                            f"expected a student and hours >= 0, got {row}")
                result[row["student"].strip()] = dt.timedelta(hours=hours)
            return result
    except OSError as err:
        raise GradingInputError(f"extensions file {str(path)!r} cannot be read: {err.strerror}") from err


def read_timestamp(folder: Path) -> dt.datetime | None:
    """The submission time in ``folder`` (None: no file or an empty one); call after
    :func:`timestamp_problem` found none."""
    path = folder / TIMESTAMP
    if not path.is_file() or path.is_symlink() or not path.read_text(encoding="utf-8").strip():
        return None
    return parse_time(path.read_text(encoding="utf-8"), TIMESTAMP)


def set_due(db: Path, assignment: str, duedate: dt.datetime | None, extensions: dict[str, dt.timedelta],
            times: dict[str, dt.datetime | None]) -> None:
    """Record the due date and, for each student of ``times``, the submission time and the
    extension (none unless listed in ``extensions``) in the gradebook at ``db``. The
    submissions are created here if missing, so that nbgrader's autograde finds them."""
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    with Gradebook(f"sqlite:///{db}") as gb, warnings.catch_warnings():
        # nbgrader's add_submission links its objects before adding them to the session: SQLAlchemy
        # warns, harmlessly (the rows are all there)
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_assignment(assignment, duedate=duedate)
        for s, when in times.items():
            gb.update_or_create_student(s)
            gb.update_or_create_submission(assignment, s, timestamp=when, extension=extensions.get(s))


def previous_due(db: Path, assignment: str) -> tuple[dt.datetime | None, dict[str, dt.timedelta]]:
    """The due date and extensions recorded in an earlier run's gradebook (None, {} if none)."""
    from nbgrader.api import Gradebook, MissingEntry

    if not db.is_file():
        return None, {}
    with Gradebook(f"sqlite:///{db}") as gb:
        try:
            a = gb.find_assignment(assignment)
        except MissingEntry:
            return None, {}
        return a.duedate, {s.student.id: s.extension for s in a.submissions if s.extension is not None}
