"""Throughput of ``make grade`` against plain serial ``nbgrader autograde``.

Run: ``.venv/bin/python benchmarks/grading.py [--students 40] [--jobs N]``.

Builds a class of honest submissions to assignment 1 (``ps1_gd_sgd``): the model answer,
the untouched release and the known wrong answers of ``tests/wrong_answers``, in turn.
Then, in one run, it times

* ``plain``: what a TA would do with nbgrader alone: one ``nbgrader autograde`` call
  over the whole class in a course directory, serial, no sandbox, no feedback;
* ``course_lib``: ``python -m course_lib.grading`` (JOBS parallel sandboxed submissions,
  each sandbox forked from its worker's pre-imported zygote, feedback rendered for each),

and prints both times and the speed-up plain / course_lib (target >= 2 on 2 cores). It
also checks that both gave every student the same score.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from course_lib.grading.release import REPO, nbgrader

ASSIGNMENT = "ps1_gd_sgd"


def build_class(subs: Path, n: int) -> None:
    solution = REPO / "solutions" / ASSIGNMENT
    release = REPO / "assignments" / ASSIGNMENT
    spec = importlib.util.spec_from_file_location("wrong", REPO / "tests" / "wrong_answers" / f"{ASSIGNMENT}.py")
    wrong = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrong)
    variants = [("solution", None), ("release", None)] + [(k, v) for k, v in wrong.WRONG_ANSWERS.items()]
    for i in range(n):
        kind, edit = variants[i % len(variants)]
        folder = subs / f"student{i:03d}" / ASSIGNMENT
        folder.mkdir(parents=True)
        for path in (release if kind == "release" else solution).glob("*.ipynb"):
            nb = nbformat.read(path, as_version=4)
            if edit is not None:
                cell_id, _, code = edit
                for c in nb.cells:
                    if c.metadata.get("nbgrader", {}).get("grade_id") == cell_id:
                        c.source = code
            nbformat.write(nb, folder / path.name)


def plain_nbgrader(subs: Path, work: Path) -> tuple[float, dict[str, float]]:
    course = work / "plain"
    shutil.copytree(REPO / "solutions" / ASSIGNMENT, course / "source" / ASSIGNMENT)
    done = nbgrader(["generate_assignment", ASSIGNMENT, "--force"], course, source="source", release="release")
    assert done.returncode == 0, done.stderr
    shutil.copytree(subs, course / "submitted")
    start = time.perf_counter()
    done = nbgrader(["autograde", ASSIGNMENT, "--force", "--create"], course, source="source", release="release")
    seconds = time.perf_counter() - start
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s.student.id: s.score for s in gb.assignment_submissions(ASSIGNMENT)}
    return seconds, scores


def ours(subs: Path, work: Path, jobs: int | None) -> tuple[float, dict[str, float]]:
    out = work / "ours"
    cmd = [sys.executable, "-m", "course_lib.grading", "--submissions", str(subs), "--assignment", ASSIGNMENT,
           "--out", str(out), "--no-progress"] + (["--jobs", str(jobs)] if jobs else [])
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    with open(out / "grades.csv", newline="") as f:
        return seconds, {r["student"]: float(r["score"]) for r in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=None, help="default: CPU cores")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_grading_") as tmp:
        work = Path(tmp)
        build_class(work / "submissions", args.students)
        t_plain, s_plain = plain_nbgrader(work / "submissions", work)
        t_ours, s_ours = ours(work / "submissions", work, args.jobs)
    same = s_plain == s_ours
    print(f"{args.students} submissions of {ASSIGNMENT} on {os.cpu_count()} cores")
    print(f"plain serial nbgrader autograde: {t_plain:7.1f} s ({t_plain / args.students:.2f} s/student)")
    print(f"course_lib.grading (sandboxed, feedback, jobs={args.jobs or os.cpu_count()}): {t_ours:7.1f} s "
          f"({t_ours / args.students:.2f} s/student)")
    print(f"speed-up plain / course_lib = {t_plain / t_ours:.2f} (target >= 2); same scores: {same}")


if __name__ == "__main__":
    main()
