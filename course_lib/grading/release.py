"""Make the student release of each assignment with ``nbgrader generate_assignment``.

``solutions/<assignment>/`` is nbgrader's *source*: the single source of truth.
``assignments/<assignment>/`` is its *release*, a build artefact committed for
students without nbgrader. Run ``make release`` (or ``python -m course_lib.grading.release``)
after editing a solution; ``tests/grading/test_assignments.py`` fails while the two disagree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIR = "solutions"
RELEASE_DIR = "assignments"


def list_assignments(source: Path = REPO / SOURCE_DIR) -> list[str]:
    """Names of the assignments under ``source`` (folders holding a notebook), sorted."""
    return sorted(p.name for p in source.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.ipynb")))


def nbgrader(args: list[str], course_root: Path, *, source: str = SOURCE_DIR,
             release: str = RELEASE_DIR, db: Path | None = None,
             timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run an ``nbgrader`` sub-command on the course at ``course_root``.

    The course layout is passed explicitly (source and release folders, the
    gradebook); everything else (the stubs that replace solutions, ...) comes from
    the repository's ``nbgrader_config.py``, copied into ``course_root`` if missing.
    """
    if not (course_root / "nbgrader_config.py").exists():
        shutil.copy(REPO / "nbgrader_config.py", course_root / "nbgrader_config.py")
    db = db if db is not None else course_root / "gradebook.db"
    cmd = [sys.executable, "-m", "nbgrader", *args,
           f"--CourseDirectory.root={course_root}",
           f"--CourseDirectory.source_directory={source}",
           f"--CourseDirectory.release_directory={release}",
           f"--CourseDirectory.db_url=sqlite:///{db}",
           "--CourseDirectory.course_id=robust-ml"]
    return subprocess.run(cmd, cwd=course_root, capture_output=True, text=True, timeout=timeout,
                          env=venv_environment())


def venv_environment() -> dict[str, str]:
    """This process's environment with its interpreter's ``bin/`` first on PATH.

    nbgrader runs helper programs (``alembic``) by name, so they must be found in
    the same virtual environment even when it is not activated.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def generate_release(assignment: str, out_root: Path, *, source_root: Path = REPO / SOURCE_DIR) -> Path:
    """Generate the release of ``assignment`` into ``out_root/<assignment>/``.

    Works in a scratch course directory (its own gradebook), then copies the
    release over ``out_root/<assignment>``, replacing what was there.

    Returns:
        The release folder.

    Raises:
        ValueError: if the assignment has no source folder.
        RuntimeError: if nbgrader fails; the message carries its log.
    """
    if not (source_root / assignment).is_dir():
        raise ValueError(f"assignment {assignment!r} has no folder under {source_root}; "
                         f"known: {list_assignments(source_root)}")
    with tempfile.TemporaryDirectory(prefix="course_release_") as tmp:
        course = Path(tmp)
        shutil.copytree(source_root / assignment, course / "source" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        if (source_root.parent / "autotests.yml").is_file():  # where nbgrader looks: the course root
            shutil.copy(source_root.parent / "autotests.yml", course / "autotests.yml")
        done = nbgrader(["generate_assignment", assignment, "--force"], course,
                        source="source", release="release")
        if done.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{done.stdout}\n{done.stderr}")
        target = out_root / assignment
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(course / "release" / assignment, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*", help="default: every folder under solutions/")
    args = parser.parse_args(argv)
    names = args.assignments or list_assignments()
    for name in names:
        target = generate_release(name, REPO / RELEASE_DIR)
        print(f"released {name} -> {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
