"""``make export OUT=... FORMAT=canvas|csv``: the grades, for a learning-management system.

Both formats come from the same numbers as ``grades.csv`` (rebuilt from the gradebook first,
so manual grades entered in Formgrader count): each student's total, ``score`` (autograded
+ manual - late penalty); a failed submission scores 0.

* ``canvas``: Canvas's gradebook "Import Scores" layout: the columns ``Student, ID, SIS User ID,
  Section`` and one column named after the assignment, holding the points; a second row
  ``Points Possible`` gives the maximum, as Canvas's own export does. Canvas matches a row to
  a student by ``ID`` (its user id) or ``SIS User ID``: give them in a roster.
* ``csv``: ``student, sis_id, assignment, score, max_score, status``.

The roster (optional, ``ROSTER=``) is a CSV with a ``student`` column (the submission folder's
name) and any of ``name``, ``id``, ``sis_id``, ``section``.

Examples:
    >>> canvas_header("ps1_gd_sgd")
    ['Student', 'ID', 'SIS User ID', 'Section', 'ps1_gd_sgd']
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from course_lib import _checks
from course_lib.grading import grades

FORMATS = ("canvas", "csv")
POINTS_POSSIBLE = "    Points Possible"


def canvas_header(assignment: str) -> list[str]:
    return ["Student", "ID", "SIS User ID", "Section", assignment]


def read_roster(path: Path | None) -> dict[str, dict[str, str]]:
    """The roster by student folder name (empty without one)."""
    if path is None:
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "student" not in reader.fieldnames:
            raise ValueError(f"roster {path.name} must have a 'student' column (the submission folder's name)")
        return {r["student"].strip(): {k: (v or "").strip() for k, v in r.items()} for r in reader}


def export(out: Path, fmt: str, roster: Path | None = None, dest: Path | None = None) -> Path:
    """Write the export of the class graded in ``out`` as ``fmt`` (``canvas`` or ``csv``) to
    ``dest`` (default ``out/<assignment>_<fmt>.csv``); returns its path."""
    fmt = _checks.choice(fmt, "format", FORMATS)
    rows = grades.refresh(out)
    people = read_roster(roster)
    assignment = grades.read_state(out)["assignment"]
    dest = dest or out / f"{assignment}_{fmt}.csv"
    with open(dest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if fmt == "canvas":
            writer.writerow(canvas_header(assignment))
            writer.writerow([POINTS_POSSIBLE, "", "", "", grades.fmt(rows[0].max_score) if rows else ""])
            for r in rows:
                p = people.get(r.student, {})
                writer.writerow([p.get("name") or r.student, p.get("id", ""), p.get("sis_id", ""),
                                 p.get("section", ""), grades.fmt(r.score)])
        else:
            writer.writerow(["student", "sis_id", "assignment", "score", "max_score", "status"])
            for r in rows:
                writer.writerow([r.student, people.get(r.student, {}).get("sis_id", ""), r.assignment,
                                 grades.fmt(r.score), grades.fmt(r.max_score), r.status])
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.grading.export", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="the output folder of make grade")
    parser.add_argument("--format", default="canvas", choices=FORMATS)
    parser.add_argument("--roster", type=Path, default=None, help="CSV: student,name,id,sis_id,section")
    parser.add_argument("--dest", type=Path, default=None, help="where to write (default OUT/<assignment>_<format>.csv)")
    args = parser.parse_args(argv)
    try:
        path = export(args.out, args.format, args.roster, args.dest)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = grades.refresh(args.out)
    waiting = [r.student for r in rows if "await manual grading" in r.reason or "await review" in r.reason]
    print(f"{len(rows)} students -> {path}")
    if waiting:
        print(f"warning: {len(waiting)} students still have answers awaiting grading by hand "
              f"(exported without them): {', '.join(waiting[:10])}", file=sys.stderr)
    people = read_roster(args.roster)
    if args.format == "canvas" and not all(people.get(r.student, {}).get("id") or
                                           people.get(r.student, {}).get("sis_id") for r in rows):
        print("note: Canvas matches students by ID or SIS User ID; give them in ROSTER=<csv> "
              "(student,name,id,sis_id,section)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
