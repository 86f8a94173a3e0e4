"""Autograde a class with nbgrader: sandboxed, parallel, with grades and feedback.

Usage (``make grade`` calls this)::

    python -m course_lib.grading --submissions DIR_OR_ZIP --assignment NAME --out OUT
                                 [--student ID] [--jobs N] [--unsafe] [--no-zygote] [limits...]

``DIR_OR_ZIP`` holds one folder per student, ``<student>/<assignment>/<notebook>.ipynb``
(a zip of that, as a learning-management system exports it, is unpacked first; one
wrapping folder is allowed). The run works in a scratch nbgrader course directory:

1. ``source/<assignment>`` is copied from ``solutions/`` and released there with
   ``nbgrader generate_assignment``: a fresh gradebook records every graded cell, its
   points and checksum (hidden tests exist only here, at grading time);
2. each student's folder is checked (notebook present, valid JSON, from this assignment,
   not oversized) and its regular files (no links) are copied to ``submitted/``;
3. ``JOBS`` trusted workers (:mod:`course_lib.grading.worker`) run nbgrader's
   ``Autograde`` for one student at a time: locked and test cells are restored from the
   gradebook (deleted ones put back), the notebook executes in a bubblewrap sandbox
   (:mod:`course_lib.grading.sandbox`), and the grades are computed from what comes back;
4. ``nbgrader generate_feedback`` renders the graded notebook (hidden test code removed).

Outputs under ``OUT``: ``grades.csv`` (one row per student folder, sorted: ``student,
assignment, score, max_score, status, reason``), ``feedback/<student>/<assignment>/*.html``
and ``gradebook.db``, nbgrader's record. ``--student ID`` regrades one student: the
others' rows, feedback and gradebook entries are kept as they are. Reasons are one
deterministic line each, so a rerun writes the same CSV. The command exits 0 when every
student got a row, 2 when the run itself could not start.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from tqdm.auto import tqdm

from course_lib.grading import sandbox
from course_lib.grading.release import REPO, SOURCE_DIR, list_assignments, nbgrader, venv_environment
from course_lib.grading.sandbox import Limits

CSV_COLUMNS = ("student", "assignment", "score", "max_score", "status", "reason")
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
MAX_NOTEBOOK_BYTES = 50 * 2**20
MAX_ZIP_BYTES = 4 * 2**30


class GradingError(RuntimeError):
    """The run itself cannot go on (bad arguments, no sandbox, a broken source)."""


@dataclass
class GradeRow:
    """One line of ``grades.csv``."""

    student: str
    assignment: str
    score: float
    max_score: float
    status: str  # "graded" or "failed"
    reason: str = ""

    def as_csv(self) -> dict[str, str]:
        return {"student": self.student, "assignment": self.assignment,
                "score": _fmt(self.score), "max_score": _fmt(self.max_score),
                "status": self.status, "reason": self.reason}


@dataclass
class _Source:
    """What the trusted side knows of the assignment, from the source and its release."""

    notebooks: list[str]
    grade_ids: dict[str, set[str]]  # notebook -> every nbgrader grade_id in it
    test_ids: dict[str, list[str]]  # notebook -> autograded test cells, in order
    locked: dict[str, dict[str, str]]  # notebook -> grade_id -> released source of locked cells
    others: dict[str, set[str]] = field(default_factory=dict)  # other assignment -> its grade_ids
    released: dict[str, list[nbformat.NotebookNode]] = field(default_factory=dict)  # notebook -> its nbgrader cells, in order


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _nbgrader_cells(nb) -> dict[str, nbformat.NotebookNode]:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells
            if isinstance(c.get("metadata", {}).get("nbgrader"), dict)
            and "grade_id" in c.metadata["nbgrader"]}


def _read_source(source_root: Path, assignment: str, release: Path) -> _Source:
    notebooks = sorted(p.name for p in (source_root / assignment).glob("*.ipynb"))
    info = _Source(notebooks, {}, {}, {})
    for name in notebooks:
        cells = _nbgrader_cells(nbformat.read(source_root / assignment / name, as_version=4))
        info.grade_ids[name] = set(cells)
        info.test_ids[name] = [gid for gid, c in cells.items() if c.metadata["nbgrader"].get("grade")
                               and not c.metadata["nbgrader"].get("solution") and c.cell_type == "code"]
        released = _nbgrader_cells(nbformat.read(release / name, as_version=4))
        info.locked[name] = {gid: c.source for gid, c in released.items() if c.metadata["nbgrader"].get("locked")}
        info.released[name] = list(released.values())
    for other in list_assignments(source_root):
        if other != assignment:
            ids: set[str] = set()
            for path in (source_root / other).glob("*.ipynb"):
                ids |= set(_nbgrader_cells(nbformat.read(path, as_version=4)))
            info.others[other] = ids
    return info


HIDDEN_MARKER = re.compile(r"^(\s*#+\s*(?:BEGIN|END) )HIDDEN TESTS", re.MULTILINE)


def _repair(nb: nbformat.NotebookNode, name: str, src: _Source) -> list[str]:
    """Give ``nb`` exactly the graded cells of the release, once each, so that nbgrader can
    grade it whatever a student did to the cells; returns notes for the TA.

    * a cell whose ``grade_id`` is not one of this notebook's, or repeats an earlier cell's
      (a cell copied in JupyterLab keeps its metadata), becomes an ordinary cell: it still
      runs, it is just not graded itself (hidden-test markers in ordinary cells, comments, are
      renamed: nbgrader would refuse to render the feedback);
    * a deleted graded cell is put back where it was, after the graded cell before it: test and
      locked cells from the release (nbgrader then restores their source, hidden tests
      included), solution cells as an empty placeholder, so that code the student moved into
      another cell is not overwritten by the release's stub.

    nbgrader 0.9 fails the whole notebook (KeyError) on a repeated or unknown grade_id, and
    when the cell it would put a deleted test after is missing too."""
    notes: list[str] = []
    known = src.grade_ids[name]
    present: set[str] = set()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            # hidden-test markers in an ordinary cell make nbgrader refuse the feedback
            cell.source = HIDDEN_MARKER.sub(r"\1HIDDEN-TESTS", cell.get("source", ""))
            continue
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if gid in known and gid not in present:
            present.add(gid)
            continue
        del cell.metadata["nbgrader"]
        cell.source = HIDDEN_MARKER.sub(r"\1HIDDEN-TESTS", cell.get("source", ""))
        what = "a copy of graded cell" if gid in present else "a cell with an unknown id"
        notes.append(f"{what} {str(gid)[:40]} was graded as an ordinary cell")
    order = [c.metadata["nbgrader"]["grade_id"] for c in src.released[name]]
    for i, released in enumerate(src.released[name]):
        gid = order[i]
        if gid in present:
            continue
        before = [j for j, c in enumerate(nb.cells) if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") in order[:i]]
        cell = nbformat.from_dict(json.loads(json.dumps(released)))  # a deep copy
        meta = cell.metadata["nbgrader"]
        if meta.get("solution"):
            cell.source = "# this cell was missing from the submission" if cell.cell_type == "code" else ""
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        nb.cells.insert(before[-1] + 1 if before else 0, cell)
        present.add(gid)
        kind = "test" if gid in src.test_ids[name] else "solution" if meta.get("solution") else "locked"
        notes.append(f"{kind} cell {gid} was deleted (restored{' from source' if kind != 'solution' else ' empty'})")
    return notes


def _check_submission(folder: Path, student: str, assignment: str,
                      src: _Source) -> tuple[str | None, list[str], dict[str, nbformat.NotebookNode]]:
    """(reason it cannot be graded or None, notes for the TA, the notebooks repaired for
    nbgrader by :func:`_repair`) for one student's folder."""
    if not STUDENT_ID.match(student):
        return "student folder name must be letters, digits, '.', '_', '@' or '-'", [], {}
    work = folder / assignment
    if not work.is_dir() or work.is_symlink():
        return f"no folder {assignment}/ inside the student's folder", [], {}
    notes: list[str] = []
    repaired: dict[str, nbformat.NotebookNode] = {}
    for name in src.notebooks:
        path = work / name
        if path.is_symlink() or not path.is_file():
            found = sorted(p.name for p in work.glob("*.ipynb"))
            return f"notebook {name} is missing (found: {', '.join(found)[:200] or 'no notebooks'})", [], {}
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            return f"{name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB", [], {}
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"{name} is not valid notebook JSON", [], {}
        if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
            return f"{name} is not valid notebook JSON", [], {}
        try:
            nb = nbformat.reads(json.dumps(raw), as_version=4)
            nbformat.validate(nb)
        except Exception:  # nbformat raises several kinds of validation errors
            return f"{name} is not a valid Jupyter notebook (nbformat 4)", [], {}
        cells = _nbgrader_cells(nb)
        ours = set(cells) & src.grade_ids[name]
        best = max(src.others, key=lambda a: len(set(cells) & src.others[a]), default=None)
        # another assignment's notebook under this name: it shares more cells with that one
        # (two assignments may share generic cell names such as "setup" or "part_a")
        if best is not None and len(set(cells) & src.others[best]) > len(ours):
            return f"notebook is from assignment {best}", [], {}
        if not ours:
            return f"{name} has none of the cells of {assignment}", [], {}
        for gid, released in src.locked[name].items():
            if gid in cells and cells[gid].source != released:
                notes.append(f"locked cell {gid} was edited (restored from source)")
        notes += _repair(nb, name, src)
        repaired[name] = nb
    return None, notes, repaired


def _unpack_zip(path: Path, dest: Path, assignment: str) -> Path:
    """Unpack an LMS export safely (no absolute paths, no '..', no links, bounded size)."""
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                parts = Path(info.filename).parts
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                if info.is_dir() or is_link or not parts or info.filename.startswith("/") or ".." in parts:
                    continue
                total += info.file_size
                if total > MAX_ZIP_BYTES:
                    raise GradingError(f"the zip {path.name} unpacks to more than {MAX_ZIP_BYTES // 2**30} GiB")
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as err:
        raise GradingError(f"submissions {str(path)!r} is not a readable zip file") from err
    entries = [p for p in dest.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and not (entries[0] / assignment).is_dir():
        return entries[0]  # one wrapping folder around the student folders
    return dest


def _worker_results(course: Path, assignment: str, limits: Limits, unsafe: bool,
                    students: list[str], jobs: int, zygote: bool = True) -> Iterator[dict]:
    """Grade ``students`` with ``jobs`` worker processes; yield each result as it comes.

    A worker that dies takes only the student it was grading with it: that student is
    reported as failed and a new worker takes over the queue.
    """
    todo: queue.Queue = queue.Queue()
    for s in students:
        todo.put(s)
    done: queue.Queue = queue.Queue()
    args = [str(course), assignment, json.dumps(limits.__dict__), "1" if unsafe else "0", "1" if zygote else "0"]

    def drive() -> None:
        proc = None
        try:
            while True:
                try:
                    student = todo.get_nowait()
                except queue.Empty:
                    return
                if proc is None or proc.poll() is not None:
                    proc = subprocess.Popen([sys.executable, "-m", "course_lib.grading.worker", *args],
                                            cwd=course, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True, env=venv_environment())
                result = None
                try:
                    proc.stdin.write(student + "\n")
                    proc.stdin.flush()
                    for line in proc.stdout:
                        try:
                            candidate = json.loads(line)
                        except json.JSONDecodeError:
                            continue  # not a result line
                        if isinstance(candidate, dict) and candidate.get("student") == student:
                            result = candidate
                            break
                except (BrokenPipeError, OSError):
                    pass
                if result is None:
                    proc.kill()
                    proc = None
                    result = {"student": student, "success": False, "feedback": False,
                              "log": "the grading worker crashed"}
                done.put(result)
        finally:
            if proc is not None:
                proc.stdin.close()
                proc.wait()

    threads = [threading.Thread(target=drive, daemon=True) for _ in range(max(1, min(jobs, len(students))))]
    for t in threads:
        t.start()
    for _ in students:
        yield done.get()
    for t in threads:
        t.join()


def _executed_notes(folder: Path, limits: Limits) -> list[str]:
    """What went wrong while the graded notebooks ran, one short phrase each."""
    notes = []
    gib = limits.memory_bytes / 2**30
    for path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, c in enumerate(nb.cells):
            name = c.metadata.get("nbgrader", {}).get("grade_id") or f"#{i + 1}"
            enames = {o.get("ename") for o in c.get("outputs", []) if o.get("output_type") == "error"}
            texts = " ".join(str(o.get("evalue", "")) for o in c.get("outputs", []))
            if "CellTimeoutError" in enames:
                notes.append(f"timed out after {limits.cell_timeout} s in cell {name}")
            if "MemoryError" in enames or "can't allocate memory" in texts or "not enough memory" in texts:
                notes.append(f"memory limit {_fmt(gib)} GiB exceeded in cell {name}")
            if "DeadKernelError" in enames:
                notes.append(f"the kernel died in cell {name}; later cells did not run and score 0")
    return notes


def _scores(db: Path, assignment: str, student: str) -> tuple[float, float, float]:
    """(autograded score, max score, points awaiting manual grading) from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        sub = gb.find_submission(assignment, student)
        pending = sum(g.max_score for nb in sub.notebooks for g in nb.grades
                      if g.auto_score is None and g.manual_score is None)
        return float(sub.score), float(sub.max_score), float(pending)


def _max_score(db: Path, assignment: str) -> float:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        return float(gb.find_assignment(assignment).max_score)


def _failure(log: str) -> str:
    found = re.search(r"SandboxFailure: (.+)", log)
    if found:
        return found.group(1).strip()
    if "the grading worker crashed" in log:
        return "the grading worker crashed on this submission"
    return "autograding failed (nbgrader could not process the notebook)"


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def grade_submissions(submissions: Path, assignment: str, out: Path, *,
                      source_root: Path = REPO / SOURCE_DIR, limits: Limits = Limits(),
                      jobs: int | None = None, student: str | None = None, unsafe: bool = False,
                      progress: bool = True, zygote: bool = True) -> list[GradeRow]:
    """Autograde every student folder in ``submissions`` (or only ``student``) into ``out``.

    Args:
        submissions: folder (or .zip) of ``<student>/<assignment>/<notebook>.ipynb``.
        assignment: the assignment's name, a folder under ``source_root``.
        out: output folder: ``grades.csv``, ``feedback/``, ``gradebook.db``.
        source_root: nbgrader source folders (default the repository's ``solutions/``).
        limits: the sandbox's resource caps (:class:`course_lib.grading.sandbox.Limits`).
        jobs: submissions graded at once; default the number of CPU cores.
        student: regrade only this student, keeping everything else in ``out``.
        unsafe: run without bubblewrap (resource limits only, no isolation).
        progress: show a tqdm bar (students done, failed, ETA).
        zygote: fork each submission's sandbox from one pre-imported Python per worker
            (:class:`course_lib.grading.sandbox.Zygote`); False starts a sandbox from scratch for each.

    Returns:
        The rows of the students graded in this run, sorted by student.

    Raises:
        GradingError: bad arguments, bubblewrap missing without ``unsafe``, or a broken source.
    """
    submissions, out = Path(submissions), Path(out)
    if assignment not in list_assignments(source_root):
        raise GradingError(f"assignment must be one of {list_assignments(source_root)}, got {assignment!r}")
    jobs = jobs or os.cpu_count() or 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise GradingError(f"jobs must be a positive integer, got {jobs!r}")
    if not unsafe:
        problem = sandbox.bwrap_problem()
        if problem:
            raise GradingError(problem)
    with tempfile.TemporaryDirectory(prefix="course_grade_") as tmp:
        tmp = Path(tmp)
        if submissions.is_file() and zipfile.is_zipfile(submissions):
            (tmp / "unzipped").mkdir()
            submissions = _unpack_zip(submissions, tmp / "unzipped", assignment)
        if not submissions.is_dir():
            raise GradingError(f"submissions must be a folder or a zip of <student>/{assignment}/*.ipynb, "
                               f"got {str(submissions)!r}")
        everyone = sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
        if student is not None and student not in everyone:
            raise GradingError(f"student {student!r} has no folder in {str(submissions)!r}")
        students = [student] if student is not None else everyone
        course = tmp / "course"
        db = course / "gradebook.db"
        shutil.copytree(source_root / assignment, course / "source" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        if student is not None and (out / "gradebook.db").is_file():
            shutil.copy(out / "gradebook.db", db)  # keep everyone else's record
        done = nbgrader(["generate_assignment", assignment, "--force"], course,
                        source="source", release="release", db=db)
        if done.returncode != 0:
            raise GradingError(f"could not release {assignment} for grading:\n{done.stdout}{done.stderr}")
        src = _read_source(source_root, assignment, course / "release" / assignment)
        max_score = _max_score(db, assignment)
        rows, notes, runnable = {}, {}, []
        for s in students:
            reason, notes[s], repaired = _check_submission(submissions / s, s, assignment, src)
            if reason:
                rows[s] = GradeRow(s, assignment, 0.0, max_score, "failed", reason)
            else:
                target = course / "submitted" / s / assignment
                if target.exists():
                    shutil.rmtree(target)
                sandbox.copy_regular_files(submissions / s / assignment, target)
                for name, nb in repaired.items():
                    nbformat.write(nb, target / name)
                runnable.append(s)
        bar = tqdm(total=len(students), desc=f"grading {assignment}", unit="student", disable=not progress)
        failed = len(rows)
        bar.update(failed)
        for result in _worker_results(course, assignment, limits, unsafe, runnable, jobs, zygote):
            s = result["student"]
            rows[s] = _record(course, db, result, assignment, max_score, limits, out, notes[s])
            failed += rows[s].status != "graded"
            bar.update(1)
            bar.set_postfix(failed=failed, refresh=False)
        bar.close()
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(db, out / "gradebook.db")
    table = _read_csv(out / "grades.csv") if student is not None else {}
    table.update({s: r.as_csv() for s, r in rows.items()})
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(table[s] for s in sorted(table))
    return [rows[s] for s in students]


def _record(course: Path, db: Path, result: dict, assignment: str, max_score: float,
            limits: Limits, out: Path, notes: list[str]) -> GradeRow:
    """Turn one worker result into a row, and copy the student's feedback to ``out``."""
    student = result["student"]
    graded = course / "autograded" / student / assignment
    if not result["success"] or not graded.is_dir():
        return GradeRow(student, assignment, 0.0, max_score, "failed", _failure(result.get("log", "")))
    score, total, pending = _scores(db, assignment, student)
    reasons = notes + _executed_notes(graded, limits)
    if pending:
        unit = "point" if pending == 1 else "points"
        reasons.append(f"{_fmt(pending)} {unit} of written answers await manual grading")
    made = course / "feedback" / student / assignment
    dest = out / "feedback" / student / assignment
    if dest.exists():
        shutil.rmtree(dest)
    if result["feedback"] and made.is_dir():
        shutil.copytree(made, dest)
    else:
        reasons.append("feedback could not be rendered")
    return GradeRow(student, assignment, score, total, "graded", "; ".join(reasons))


def main(argv: list[str] | None = None) -> int:
    defaults = Limits()
    parser = argparse.ArgumentParser(prog="python -m course_lib.grading",
                                     description="Autograde a folder of submissions with nbgrader, sandboxed.")
    parser.add_argument("--submissions", required=True, type=Path,
                        help="folder (or .zip) of <student>/<assignment>/<notebook>.ipynb")
    parser.add_argument("--assignment", required=True, help="assignment name (a folder of solutions/)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--student", default=None, help="regrade only this student")
    parser.add_argument("--jobs", type=int, default=None, help="submissions at once (default: CPU cores)")
    parser.add_argument("--unsafe", action="store_true", help="grade without bubblewrap isolation")
    parser.add_argument("--no-zygote", action="store_true",
                        help="start every submission's sandbox from scratch (slower; no shared pre-imported Python)")
    parser.add_argument("--source", type=Path, default=REPO / SOURCE_DIR,
                        help="folder of nbgrader source assignments (default: solutions/)")
    parser.add_argument("--cell-timeout", type=int, default=defaults.cell_timeout,
                        help=f"seconds one cell may run (default {defaults.cell_timeout})")
    parser.add_argument("--wall-timeout", type=int, default=defaults.wall_timeout,
                        help=f"seconds one submission may run (default {defaults.wall_timeout})")
    parser.add_argument("--memory-gib", type=float, default=defaults.memory_bytes / 2**30,
                        help=f"memory per sandboxed process, GiB (default {defaults.memory_bytes / 2**30:g})")
    parser.add_argument("--max-processes", type=int, default=defaults.max_processes,
                        help=f"processes per submission (default {defaults.max_processes})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        limits = Limits(cell_timeout=args.cell_timeout, wall_timeout=args.wall_timeout,
                        memory_bytes=int(args.memory_gib * 2**30), max_processes=args.max_processes)
        if args.unsafe:
            print("warning: grading WITHOUT a sandbox (UNSAFE=1): student code runs with your "
                  "permissions, can read solutions/ and write anywhere you can", file=sys.stderr)
        rows = grade_submissions(args.submissions, args.assignment, args.out, source_root=args.source,
                                 limits=limits, jobs=args.jobs, student=args.student,
                                 unsafe=args.unsafe, progress=not args.no_progress,
                                 zygote=not args.no_zygote)
    except (GradingError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    graded = [r for r in rows if r.status == "graded"]
    print(f"{len(graded)} graded, {len(rows) - len(graded)} failed -> {args.out / 'grades.csv'}")
    for r in rows:
        if r.status != "graded":
            print(f"  {r.student}: {r.reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
