"""Autograde students one after another, reading their ids on stdin (started by :mod:`course_lib.grading`).

Usage: ``python -m course_lib.grading.worker COURSE ASSIGNMENT LIMITS_JSON UNSAFE ZYGOTE``,
then one student id per line on stdin; for each, one JSON line on stdout:
``{"student", "success", "feedback", "log"}``.

This process is the *trusted* side: it holds the gradebook and runs nbgrader's
``Autograde`` converter, whose sanitizing steps restore locked and test cells (hidden
tests included) from the gradebook and put back deleted test cells. nbgrader's own
``Execute`` step is replaced by :class:`SandboxExecute`, which ships the sanitized
notebook to a bubblewrap sandbox (:mod:`course_lib.grading.sandbox`) and reads back the
executed notebook; grades are then computed here from that notebook. Student code
never runs in this process. By default the sandboxes are forked from one pre-imported
zygote per worker (:class:`course_lib.grading.sandbox.Zygote`; ZYGOTE ``0``: each from scratch).
Several workers can run at once (``JOBS``): they share the gradebook through SQLite with
a long busy timeout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Dict, List, Unicode

from course_lib.grading import sandbox


class _Zygotes:
    """This worker's zygote (:class:`course_lib.grading.sandbox.Zygote`), started on first use and
    restarted if it stops; given up for the worker's life if it cannot fork a sandbox here
    (nested user namespaces refused), when every submission gets a sandbox of its own."""

    zygote: sandbox.Zygote | None = None
    unusable: str | None = None

    @classmethod
    def execute(cls, nb, files: Path, limits: sandbox.Limits, preload: list[str]):
        if cls.unusable is None:
            try:
                if cls.zygote is None or not cls.zygote.alive():
                    cls.zygote = sandbox.Zygote(limits, tuple(preload))
                return cls.zygote.execute(nb, files)
            except sandbox.ZygoteError as error:
                if error.permanent:
                    cls.unusable = str(error)  # this machine cannot run it: stop trying
                cls.zygote = None
        return sandbox.execute_notebook(nb, files, limits)

    @classmethod
    def close(cls) -> None:
        if cls.zygote is not None:
            cls.zygote.close()
            cls.zygote = None


class SandboxExecute(NbGraderPreprocessor):
    """nbgrader preprocessor: execute the notebook in the sandbox instead of in-process."""

    limits = Dict(help="course_lib.grading.sandbox.Limits fields").tag(config=True)
    unsafe = Bool(False, help="run without bubblewrap (resource limits only)").tag(config=True)
    zygote = Bool(True, help="fork each sandbox from a pre-imported zygote (one per worker)").tag(config=True)
    preload = List(Unicode(), help="modules the zygote imports once (the assignment's imports)").tag(config=True)

    def preprocess(self, nb, resources):
        files = Path(resources["metadata"]["path"])  # autograded/<student>/<assignment>
        limits = sandbox.Limits(**self.limits)
        if self.unsafe:
            executed, reason = sandbox.execute_notebook(nb, files, limits, unsafe=True)
        elif self.zygote:
            executed, reason = _Zygotes.execute(nb, files, limits, self.preload)
        else:
            executed, reason = sandbox.execute_notebook(nb, files, limits)
        if executed is None:
            raise SandboxFailure(reason)
        return executed, resources


class SandboxFailure(RuntimeError):
    """Nothing usable came back from the sandbox; the message is a one-line reason."""


def shared_templates_exporter():
    """An ``HTMLExporter`` class whose Jinja environment is built once per worker process.

    nbgrader's ``GenerateFeedback`` makes a fresh exporter for every student, and each would
    compile the feedback templates again (about 0.2 s a student). The environment depends only
    on the template paths and the exporter's configuration, the same for every student of a
    worker; the per-notebook filters (code highlighting, output types) are registered on it
    anew before each conversion, as nbconvert does."""
    from nbconvert.exporters import HTMLExporter

    class SharedTemplatesHTMLExporter(HTMLExporter):
        _environments: dict = {}

        def _create_environment(self):
            key = (tuple(self.template_paths), self.template_extension, self.enable_async,
                   self.template_name, tuple(sorted(self.filters)))
            environment = self._environments.get(key)
            if environment is None:
                environment = self._environments[key] = super()._create_environment()
            return environment

    return SharedTemplatesHTMLExporter


def main(argv: list[str]) -> int:
    course, assignment, limits, unsafe = Path(argv[0]), argv[1], json.loads(argv[2]), argv[3] == "1"
    zygote = argv[4] == "1"
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.source_directory = "source"
    config.CourseDirectory.release_directory = "release"
    # several workers share the gradebook: wait for a lock instead of failing at once
    config.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}?timeout=300"
    config.OverwriteCells.add_missing_cells = True  # deleted test cells come back from the source
    config.SandboxExecute.limits = limits
    config.SandboxExecute.unsafe = unsafe
    config.SandboxExecute.zygote = zygote
    # the zygote imports what the assignment's own (trusted) notebooks import, never the students'
    config.SandboxExecute.preload = sandbox.notebook_imports(sorted((course / "source" / assignment).glob("*.ipynb")))
    config.Autograde.autograde_preprocessors = [
        SandboxExecute,
        "nbgrader.preprocessors.IgnorePattern",
        "nbconvert.preprocessors.ClearMetadataPreprocessor",
        "nbgrader.preprocessors.LimitOutput",
        "nbgrader.preprocessors.SaveAutoGrades",
        "nbgrader.preprocessors.AssignLatePenalties",
        "nbgrader.preprocessors.CheckCellMetadata",
    ]
    config.HTMLExporter.sanitize_html = True  # student outputs may carry scripts
    config.GenerateFeedback.exporter_class = shared_templates_exporter()
    try:
        grade_students(sys.stdin, assignment, config)
    finally:
        _Zygotes.close()
    return 0


def grade_students(lines, assignment: str, config) -> None:
    """Autograde and render feedback for each student id in ``lines``; one JSON line each."""
    from nbgrader.converters import Autograde, GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log

    for line in lines:
        student = line.strip()
        if not student:
            continue
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
        result = {"student": student, "success": bool(graded["success"]),
                  "feedback": bool(feedback["success"]),
                  "log": graded.get("log", "") + graded.get("error", "")}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
