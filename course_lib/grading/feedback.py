"""nbgrader preprocessors for the feedback students get back.

nbgrader's ``ClearHiddenTests`` removes hidden test code from the test cells shown in
feedback, but a test cell that raised still carries IPython's traceback, which
quotes the lines around the failure, hidden ones included. :class:`HideHiddenTestTracebacks`
shortens the traceback of such a cell to its last line (``AssertionError: message``),
so hidden tests can be used again next year. It must run before ``ClearHiddenTests``
(it looks for the hidden-test markers); ``nbgrader_config.py`` orders them.

:func:`render` renders a course's feedback from its gradebook (``make feedback OUT=...``
runs it on every graded student, after the TA's manual grading, manual scores and comments
included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"


class HideHiddenTestTracebacks(Preprocessor):
    """Reduce the traceback of a failed test cell that holds hidden tests to ``ename: evalue``."""

    enabled = Bool(True, help="nbconvert skips preprocessors that are not enabled").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        nbgrader = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and nbgrader.get("grade") and BEGIN_HIDDEN in cell.source:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    message = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".rstrip(": ")
                    output["traceback"] = [message, "(the traceback is hidden: this cell holds hidden tests)"]
        return cell, resources


def render(root: Path, assignment: str, students: list[str]) -> list[str]:
    """Render the HTML feedback of ``students`` in the course at ``root`` (its
    ``nbgrader_config.py`` and gradebook: manual scores and comments included, hidden tests
    hidden) into ``root/feedback``; returns the students whose feedback failed."""
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log

    from course_lib.grading.course import load_config

    config = load_config(root)
    config.CourseDirectory.root = str(root)
    failed = []
    for student in students:
        coursedir = CourseDirectory(config=config)
        coursedir.assignment_id, coursedir.student_id = assignment, student
        renderer = GenerateFeedback(coursedir=coursedir, config=config)
        renderer.force = True
        if not capture_log(renderer)["success"]:
            failed.append(student)
    return failed


def main(argv: list[str] | None = None) -> int:
    """``make feedback OUT=...``: every graded student's feedback again, from the gradebook."""
    parser = argparse.ArgumentParser(prog="python -m course_lib.grading.feedback", description=main.__doc__)
    parser.add_argument("--out", required=True, type=Path, help="the output folder of make grade")
    args = parser.parse_args(argv)
    from course_lib.grading import grades

    try:
        rows = grades.refresh(args.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    graded = [r.student for r in rows if r.status == "graded"]
    failed = render(args.out.resolve(), rows[0].assignment if rows else "", graded)
    print(f"feedback for {len(graded) - len(failed)} students -> {args.out / 'feedback'}")
    for s in failed:
        print(f"  {s}: feedback could not be rendered", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
