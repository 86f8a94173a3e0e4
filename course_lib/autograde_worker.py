"""Autograde a list of students in one process (started by :mod:`course_lib.grading`).

Usage: ``python -m course_lib.autograde_worker COURSE ASSIGNMENT TIMEOUT STUDENT...``

``COURSE`` is a scratch nbgrader course directory prepared by ``course_lib.grading``
(``nbgrader_config.py``, ``source/``, ``release/``, ``submitted/``, ``gradebook.db``).
For each student in turn the worker runs nbgrader's ``Autograde`` and
``GenerateFeedback`` converters in-process, which saves a Python start and an
nbgrader import per student and per step compared with calling the ``nbgrader``
program, and prints one JSON line ``{"student", "success", "feedback", "log"}``.
Student code runs in Jupyter kernels (separate processes), never in this one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    course, assignment, timeout, students = Path(argv[0]), argv[1], int(argv[2]), argv[3:]
    from nbgrader.converters import Autograde, GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.source_directory = "source"
    config.CourseDirectory.release_directory = "release"
    config.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    config.Execute.timeout = timeout
    for student in students:
        coursedir = CourseDirectory(config=config)
        coursedir.assignment_id, coursedir.student_id = assignment, student
        grader = Autograde(coursedir=coursedir, config=config)
        grader.force, grader.create_student = True, True
        graded = capture_log(grader)
        feedback = {"success": False}
        if graded["success"]:
            renderer = GenerateFeedback(coursedir=coursedir, config=config)
            renderer.force = True
            feedback = capture_log(renderer)
        line = {"student": student, "success": bool(graded["success"]),
                "feedback": bool(feedback["success"]),
                "log": graded.get("log", "") + graded.get("error", "")}
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
