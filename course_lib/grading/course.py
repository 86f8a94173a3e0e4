"""``OUT`` as a real nbgrader course directory, the one Formgrader opens.

After ``make grade``, ``OUT`` holds, for the graded assignment::

    nbgrader_config.py           the repository's configuration, with this folder as the course
                                 root (``source``/``release`` folders, ``gradebook.db``) and the
                                 late-submission policy
    source/<assignment>/         the source it was graded against (solutions, hidden tests)
    release/<assignment>/        its release
    submitted/<student>/<assignment>/   what each student handed in, as graded (repaired)
    autograded/<student>/<assignment>/  the executed, autograded notebooks
    feedback/<student>/<assignment>/    the HTML feedback
    gradebook.db, grades.csv, grading_state.json

so that ``nbgrader`` and Formgrader work on it as on any course (``make formgrade OUT=...``).
The grading run itself works in a scratch course directory of the same layout and moves its
results here at the end (:func:`install`): a run that stops half-way leaves ``OUT`` as it was.

Examples:
    >>> "c.CourseDirectory.source_directory = 'source'" in config_text(LatePolicy())
    True
"""

from __future__ import annotations

import shutil
from pathlib import Path

from course_lib.grading.late import LatePolicy
from course_lib.grading.release import REPO

STUDENT_FOLDERS = ("submitted", "autograded", "feedback")


def config_text(policy: LatePolicy) -> str:
    """The ``nbgrader_config.py`` of a graded class: the repository's, then this folder as the
    course (wherever it is moved), the feedback's HTML sanitized, and ``policy``."""
    base = (REPO / "nbgrader_config.py").read_text(encoding="utf-8")
    return base + (
        "\n# -- a graded class (written by make grade): this folder is the course directory --\n"
        "import os as _os\n\n"
        "c.CourseDirectory.root = _os.path.dirname(_os.path.abspath(__file__))\n"
        "c.CourseDirectory.source_directory = 'source'\n"
        "c.CourseDirectory.release_directory = 'release'\n"
        "c.CourseDirectory.db_url = 'sqlite:///' + _os.path.join(c.CourseDirectory.root, 'gradebook.db')\n"
        "c.HTMLExporter.sanitize_html = True  # student outputs may carry scripts\n"
        "# late submissions (make grade LATE=...):\n"
        + policy.nbgrader_config())


def write_config(root: Path, policy: LatePolicy) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(config_text(policy), encoding="utf-8")


def load_config(root: Path):
    """The traitlets ``Config`` of the course at ``root`` (its ``nbgrader_config.py``)."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()


def copy_autotests(course_root: Path, root: Path) -> None:
    """nbgrader looks for ``autotests.yml`` at the course root: the scratch course gets the
    repository's (``course_root``, the folder above ``solutions/``), if it has one."""
    found = course_root / "autotests.yml"
    if found.is_file():
        shutil.copy(found, root / "autotests.yml")


def notebooks_changed(old: Path, new: Path) -> bool:
    """Whether the notebooks in folder ``new`` differ from those in ``old`` (missing: changed)."""
    if not old.is_dir():
        return True
    names = {p.name for p in old.glob("*.ipynb")} | {p.name for p in new.glob("*.ipynb")}
    return any(not (old / n).is_file() or not (new / n).is_file()
               or (old / n).read_bytes() != (new / n).read_bytes() for n in names)


def _replace(src: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    if src.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest)


def install(scratch: Path, out: Path, assignment: str, students: list[str], full: bool) -> None:
    """Move the run's course folders from ``scratch`` to ``out``: the source and release, and
    each of ``students``' submitted, autograded and feedback folders. A ``full`` run replaces
    every student's; a regrade only those of ``students``."""
    out.mkdir(parents=True, exist_ok=True)
    for where in ("source", "release"):
        _replace(scratch / where / assignment, out / where / assignment)
    if full:
        for where in STUDENT_FOLDERS:
            if (out / where).is_dir():
                for folder in (out / where).iterdir():
                    if folder.is_dir() and folder.name not in students:
                        shutil.rmtree(folder)
    for s in students:
        for where in STUDENT_FOLDERS:
            _replace(scratch / where / s / assignment, out / where / s / assignment)
    shutil.copy(scratch / "gradebook.db", out / "gradebook.db")
    if (scratch / "autotests.yml").is_file():
        shutil.copy(scratch / "autotests.yml", out / "autotests.yml")
