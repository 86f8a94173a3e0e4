"""The grading pipeline (``make grade`` / ``python -m course_lib.grading``) on a class of
honest, broken and hostile submissions to a small synthetic assignment whose scores are
known: ``square`` 2 points (one visible, one hidden test), ``cube`` 3 points, a written
answer 1 point (graded by hand). Each case's expected outcome is written beside it.

The whole class is graded once, in parallel, inside the bubblewrap sandbox; the module
is skipped, with the reason shown, only where bwrap cannot run."""

from __future__ import annotations

import csv
import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import sandbox
from course_lib.grading import CSV_COLUMNS
from course_lib.grading.release import REPO, generate_release
from nbgrader_helpers import cell, notebook, square_assignment

pytestmark = pytest.mark.grading

BWRAP_PROBLEM = sandbox.bwrap_problem()
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=f"no sandbox here: {BWRAP_PROBLEM}")

ASSIGNMENT = "sq"
MAX_SCORE = 6
SOLUTION_SQUARE = "def square(x):\n    return x * x"

# student -> (what they hand in, expected status, expected score, expected reason or a part of it)
CASES = {
    "alice": ("the model answer", "graded", 5, "1 point of written answers await manual grading"),
    "bob": ("the untouched release", "graded", 0, ""),
    "gina": ("passes square's visible test, not its hidden one", "graded", 3, ""),
    "hardy": ("answers hard-coded to the visible tests", "graded", 3, ""),
    "loop": ("an infinite loop in square", "graded", 3, "timed out after 10 s in cell square"),
    "hog": ("allocates 8 GiB in square", "graded", 3, "memory limit 1 GiB exceeded in cell square"),
    "carol": ("invalid JSON", "failed", 0, "sq.ipynb is not valid notebook JSON"),
    "empty": ("an empty file", "failed", 0, "sq.ipynb is not valid notebook JSON"),
    "other": ("the notebook of another assignment", "failed", 0, "notebook is from assignment cubes"),
    "erin": ("no notebook", "failed", 0, "notebook sq.ipynb is missing"),
    "frank": ("no assignment folder", "failed", 0, "no folder sq/ inside the student's folder"),
    "deleter": ("test cells deleted, square wrong", "graded", 3,
                "test cell test_square was deleted (restored from source)"),
    "tom": ("test_cube rewritten to `pass`, cube wrong", "graded", 2,
            "locked cell test_cube was edited (restored from source)"),
    "quitter": ("sys.exit() after a correct square", "graded", 5, ""),
    "exiter": ("os._exit(0) in cube, after a correct square", "graded", 2,
               "the kernel died in cell cube; later cells did not run and score 0"),
    "crasher": ("a segfault in cube, after a correct square", "graded", 2,
                "the kernel died in cell cube; later cells did not run and score 0"),
    "chatty": ("100 MB of printed output, correct answers", "graded", 5, ""),
    "vandal": ("writes to ../, the project, the gradebook, the output; correct answers", "graded", 5, ""),
    "escaper": ("remounts the venv and course_lib read-write and writes there; correct answers",
                "graded", 5, ""),
    "snoop": ("walks up from its folder to read solutions/, answers nothing", "graded", 0, ""),
    "swallow": ("a custom exception handler that hides failed asserts, wrong answers", "graded", 0, ""),
    # what students do to cells in JupyterLab; nbgrader alone fails such a notebook (KeyError)
    "copier": ("copy-pasted the square and test_cube cells (metadata kept), correct answers", "graded", 5,
               "a copy of graded cell square was graded as an ordinary cell; "
               "a copy of graded cell test_cube was graded as an ordinary cell"),
    "renamer": ("renamed square's grade_id, correct answers", "graded", 5,
                "a cell with an unknown id square_v2 was graded as an ordinary cell"),
    "pruner": ("deleted the cube and test_cube cells, correct square", "graded", 2,
               "solution cell cube was deleted (restored empty); test cell test_cube was deleted (restored from source)"),
    "mover": ("moved square into a new plain cell and deleted the graded one, correct answers", "graded", 5,
              "solution cell square was deleted (restored empty)"),
    "marker": ("hidden-test markers in a cell of its own, correct answers", "graded", 5, ""),
}
HONEST = ("alice", "bob", "gina")

VANDAL = """\
import os, pathlib, sqlite3
def square(x):
    return x * x
for target in ["../../x.txt", "../../../pwned.txt", "/tmp/../x.txt", "{repo}/pwned.txt",
               "{repo}/solutions/sq/sq.ipynb", "{repo}/gradebook.db", "{out}/grades.csv",
               "{subs}/alice/sq/sq.ipynb", os.path.expanduser("~/pwned.txt")]:
    try:
        with open(target, "w") as f:
            f.write("pwned")
    except OSError:
        pass
try:
    sqlite3.connect("{out}/gradebook.db").execute("update grade set auto_score = 0")
except Exception:
    pass
"""

ESCAPER = """\
import ctypes, os, subprocess
def square(x):
    return x * x
libc = ctypes.CDLL(None, use_errno=True)
for target in ["{repo}/course_lib", "{venv}", "/sandbox"]:
    subprocess.run(["mount", "-o", "remount,bind,rw", target], capture_output=True)
    libc.mount(None, target.encode(), None, 32 | 4096, None)  # MS_REMOUNT | MS_BIND, without MS_RDONLY
    try:
        with open(os.path.join(target, "pwned.txt"), "w") as f:
            f.write("pwned")
    except OSError:
        pass
"""

SNOOP = """\
import json, os, pathlib
found = []
for parent in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents, pathlib.Path("{repo}"), pathlib.Path("{source}")]:
    for pattern in ("sq/sq.ipynb", "solutions/*/sq.ipynb", "*/solutions/*/sq.ipynb"):
        found += parent.glob(pattern)
for path in found:
    for c in json.loads(path.read_text())["cells"]:
        if c["metadata"].get("nbgrader", {{}}).get("solution") and c["cell_type"] == "code":
            exec("".join(c["source"]).replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""))
print("found", len(found))
"""


def _edit(nb, grade_id, source):
    nb = nbformat.from_dict(nb)
    next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id).source = source
    return nb


def _drop(nb, *grade_ids):
    nb = nbformat.from_dict(nb)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in grade_ids]
    return nb


def _copy_cell(nb, grade_id):
    """A copy of a cell right after it, as JupyterLab pastes one: same metadata, a new id."""
    nb = nbformat.from_dict(nb)
    i = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    copy = nbformat.from_dict(nbformat.v4.new_code_cell(nb.cells[i].source))
    copy.metadata = nbformat.from_dict(dict(nb.cells[i].metadata))
    nb.cells.insert(i + 1, copy)
    return nb


def _rename(nb, grade_id, new):
    nb = nbformat.from_dict(nb)
    next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id).metadata.nbgrader.grade_id = new
    return nb


def _html_text(path: Path) -> str:
    """The visible text of an HTML page (syntax highlighting splits code into spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


VENV = Path(sys.prefix).resolve()
CACHES = {"__pycache__", ".pytest_cache"}  # written by any Python process and pytest run, this one or not
GUARDED = (".git/", "course_lib/")  # every file counts here, git-ignored or not: code git or Python runs


def _snapshot(root: Path, counts: Callable[[str], bool] = lambda rel: True) -> dict[str, str]:
    """A hash of every file under ``root`` whose path (relative, with '/') ``counts``: a link
    by its target, caches and the venv left out (what must not change during grading)."""
    result = {}
    for folder, dirs, files in os.walk(root):
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        dirs[:] = [d for d in dirs if d not in CACHES and d != ".venv" and d not in links
                   and Path(folder, d).resolve() != VENV]
        for name in files + links:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if counts(rel):
                result[rel] = ("-> " + os.readlink(path) if path.is_symlink()
                               else hashlib.sha256(path.read_bytes()).hexdigest())
    return result


def _git_ignored(root: Path) -> tuple[set[str], tuple[str, ...]] | None:
    """The untracked files and folders (these ending in '/') that git ignores under ``root``,
    relative to it; None where ``root`` is no git checkout (then nothing is ignored)."""
    try:
        done = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--others", "--ignored",
                               "--exclude-standard", "--directory"], capture_output=True, timeout=120)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    paths = [p for p in done.stdout.decode().split("\0") if p]
    return {p for p in paths if not p.endswith("/")}, tuple(p for p in paths if p.endswith("/"))


def _project_snapshot() -> dict[str, str]:
    """The project's files a submission must not touch: every file git tracks, every new one
    it would see (not ignored: ``pwned.txt``, a ``conftest.py``), and everything under .git/
    and course_lib/. Git-ignored outputs elsewhere (the ``gradebook.db`` that the lab's
    Formgrader in tests/test_lab.py makes in a fresh clone, ``site/``, logs, the egg-info) are
    left out: other tests, on another pytest-xdist worker, may write them while the class is
    graded. The hostile submissions' own targets among them are checked by name in
    test_nothing_outside_the_sandbox_changes."""
    ignored = _git_ignored(REPO)
    if ignored is None:
        return _snapshot(REPO)
    files, folders = ignored

    def counts(rel: str) -> bool:
        return rel.startswith(GUARDED) or not (rel in files or rel.startswith(folders))
    return _snapshot(REPO, counts)


def _venv_listing() -> dict[str, tuple[int, int]]:
    """(size, modification time in ns) of every file in the venv, bytecode caches left out: a
    cheap record of its gigabytes that shows any file added, removed or written."""
    result = {}
    for folder, dirs, files in os.walk(VENV):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            result[os.path.relpath(os.path.join(folder, name), VENV)] = (stat.st_size, stat.st_mtime_ns)
    return result


def _build_class(root: Path) -> tuple[Path, Path]:
    """Write the source assignments and the class's submission folder; return (source, submissions)."""
    source = root / "solutions"
    (source / ASSIGNMENT).mkdir(parents=True)
    solution = square_assignment()
    nbformat.write(solution, source / ASSIGNMENT / "sq.ipynb")
    (source / "cubes").mkdir()
    nbformat.write(notebook(cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
                                 grade_id="f", solution=True),
                            cell("assert f() == 1", grade_id="test_f", grade=True, points=1, locked=True)),
                   source / "cubes" / "c.ipynb")
    release = nbformat.read(generate_release(ASSIGNMENT, root / "release", source_root=source) / "sq.ipynb",
                            as_version=4)
    other = nbformat.read(generate_release("cubes", root / "release", source_root=source) / "c.ipynb",
                          as_version=4)
    subs, out = root / "submissions", root / "out"
    fill = {"repo": REPO, "out": out, "subs": subs, "source": source, "venv": Path(sys.prefix)}
    notebooks = {
        "alice": solution,
        "bob": release,
        "gina": _edit(solution, "square", "def square(x):\n    return 3 * x"),
        "hardy": _edit(solution, "square", "def square(x):\n    return 9 if x == 3 else 0"),
        "loop": _edit(solution, "square", "while True:\n    pass"),
        "hog": _edit(solution, "square", "hoard = bytearray(8 * 2**30)\n" + SOLUTION_SQUARE),
        "other": other,
        "deleter": _drop(_edit(solution, "square", "def square(x):\n    return 0"), "test_square", "test_cube"),
        "tom": _edit(_edit(release, "test_cube", "pass"), "square", SOLUTION_SQUARE),
        "quitter": _edit(solution, "square", "import sys\n" + SOLUTION_SQUARE + "\nsys.exit()"),
        "exiter": _edit(solution, "cube", "import os\nos._exit(0)"),
        "crasher": _edit(solution, "cube", "import ctypes\nctypes.string_at(0)"),
        "chatty": _edit(solution, "square", SOLUTION_SQUARE + "\nprint('x' * 100_000_000)"),
        "vandal": _edit(solution, "square", VANDAL.format(**fill)),
        "escaper": _edit(solution, "square", ESCAPER.format(**fill)),
        "snoop": _edit(release, "square", SNOOP.format(**fill)),
        "swallow": _edit(_edit(release, "square",
                               "get_ipython().set_custom_exc((Exception,), lambda *a, **k: None)\n"
                               "def square(x):\n    return 0"), "cube", "def cube(x):\n    return 0"),
    }
    notebooks["copier"] = _copy_cell(_copy_cell(solution, "square"), "test_cube")
    notebooks["renamer"] = _rename(solution, "square", "square_v2")
    notebooks["pruner"] = _drop(solution, "cube", "test_cube")
    notebooks["mover"] = _drop(solution, "square")
    notebooks["mover"].cells.insert(1, nbformat.v4.new_code_cell(SOLUTION_SQUARE))
    notebooks["marker"] = nbformat.from_dict(solution)
    notebooks["marker"].cells.insert(2, nbformat.v4.new_code_cell(
        "### BEGIN HIDDEN TESTS\nassert True\n### END HIDDEN TESTS"))
    for student, nb in notebooks.items():
        (subs / student / ASSIGNMENT).mkdir(parents=True)
        nbformat.write(nb, subs / student / ASSIGNMENT / "sq.ipynb")
    (subs / "carol" / ASSIGNMENT).mkdir(parents=True)
    (subs / "carol" / ASSIGNMENT / "sq.ipynb").write_text("{ this is not JSON")
    (subs / "empty" / ASSIGNMENT).mkdir(parents=True)
    (subs / "empty" / ASSIGNMENT / "sq.ipynb").write_text("")
    (subs / "erin" / ASSIGNMENT).mkdir(parents=True)
    (subs / "erin" / ASSIGNMENT / "notes.txt").write_text("forgot the notebook")
    (subs / "frank" / "ps9").mkdir(parents=True)
    (subs / "README.txt").write_text("a stray file is not a student")
    # a link to the solutions, handed in next to an honest notebook: it must not be followed
    os.symlink(source / ASSIGNMENT / "sq.ipynb", subs / "bob" / ASSIGNMENT / "answers.ipynb")
    return source, subs


def _grade(subs: Path, out: Path, source: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "course_lib.grading", "--submissions", str(subs),
                           "--assignment", ASSIGNMENT, "--out", str(out), "--source", str(source),
                           "--cell-timeout", "10", "--memory-gib", "1", "--jobs", "2", "--no-progress", *extra],
                          capture_output=True, text=True, timeout=900)


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if BWRAP_PROBLEM is not None:
        pytest.skip(f"no sandbox here: {BWRAP_PROBLEM}")
    root = tmp_path_factory.mktemp("grading")
    source, subs = _build_class(root)
    before = {"repo": _project_snapshot(), "venv": _venv_listing(), "subs": _snapshot(subs),
              "source": _snapshot(source)}
    out = root / "out"
    done = _grade(subs, out, source)
    after = {"repo": _project_snapshot(), "venv": _venv_listing(), "subs": _snapshot(subs),
             "source": _snapshot(source)}
    return {"done": done, "rows": _rows(out), "out": out, "root": root, "source": source, "subs": subs,
            "before": before, "after": after}


def test_exit_code_summary_and_one_row_per_student_folder(graded):
    done, rows = graded["done"], graded["rows"]
    assert done.returncode == 0, done.stderr
    assert sorted(rows) == sorted(CASES)
    with open(graded["out"] / "grades.csv", newline="") as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    assert all(r["assignment"] == ASSIGNMENT and float(r["max_score"]) == MAX_SCORE for r in rows.values())
    failed = [s for s, case in CASES.items() if case[1] == "failed"]
    assert f"{len(CASES) - len(failed)} graded, {len(failed)} failed" in done.stdout
    for s in failed:
        assert f"{s}: {CASES[s][3]}" in done.stdout


@pytest.mark.parametrize("student", sorted(CASES))
def test_each_submission_gets_its_expected_outcome(graded, student):
    what, status, score, reason = CASES[student]
    row = graded["rows"][student]
    assert (row["status"], float(row["score"])) == (status, score), f"{student} ({what}): {row}"
    assert reason in row["reason"], f"{student} ({what}): {row['reason']!r}"
    assert "Traceback" not in row["reason"] and "/tmp" not in row["reason"] and "\n" not in row["reason"]


def test_nothing_outside_the_sandbox_changes(graded):
    for where in ("repo", "venv", "subs", "source"):
        before, after = graded["before"][where], graded["after"][where]
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert not changed, f"grading changed files in {where}: {changed[:10]}"
    assert not (REPO / "course_lib" / "pwned.txt").exists() and not (VENV / "pwned.txt").exists()
    for name in ("x.txt", "pwned.txt"):
        assert not (graded["root"] / name).exists() and not (graded["root"].parent / name).exists()
    # the vandal's targets outside the snapshots (git-ignored, or outside the project) hold no "pwned"
    for target in (REPO / "pwned.txt", REPO / "gradebook.db", Path("/x.txt"), Path("/pwned.txt"),
                   Path.home() / "pwned.txt"):
        assert not target.is_file() or target.read_bytes() != b"pwned", target


def test_feedback_exists_without_hidden_tests_or_solutions(graded):
    out = graded["out"]
    for student, (_, status, _, _) in CASES.items():
        folder = out / "feedback" / student / ASSIGNMENT
        assert (folder / "sq.html").is_file() == (status == "graded"), student
        if status == "graded":
            text = _html_text(folder / "sq.html")
            assert "square(-4)" not in text  # hidden test code stays hidden, tracebacks included
    assert "return x * x" not in _html_text(out / "feedback" / "snoop" / ASSIGNMENT / "sq.html")


def test_the_gradebook_is_the_record(graded):
    from nbgrader.api import Gradebook

    rows = graded["rows"]
    with Gradebook(f"sqlite:///{graded['out'] / 'gradebook.db'}") as gb:
        for student, row in rows.items():
            if row["status"] == "graded":
                assert gb.find_submission(ASSIGNMENT, student).score == float(row["score"])


def test_honest_grades_do_not_depend_on_the_class(graded, tmp_path):
    """Graded alone, each honest student gets exactly the grade they got with everyone, and
    the same whether their sandbox was forked from the zygote or built from scratch."""
    subs = tmp_path / "alone"
    for student in HONEST:
        shutil.copytree(graded["subs"] / student, subs / student, symlinks=True)
    # alone, one worker, and each sandbox built from scratch: the class ran in forked ones
    done = _grade(subs, tmp_path / "out", graded["source"], "--jobs", "1", "--no-zygote")
    assert done.returncode == 0, done.stderr
    alone = _rows(tmp_path / "out")
    for student in HONEST:
        assert alone[student] == graded["rows"][student]


def test_a_second_run_changes_nothing(graded, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(graded["out"], out)
    done = _grade(graded["subs"], out, graded["source"])
    assert done.returncode == 0, done.stderr
    assert (out / "grades.csv").read_bytes() == (graded["out"] / "grades.csv").read_bytes()


def test_regrading_one_student_keeps_the_others(graded, tmp_path):
    out = tmp_path / "regrade"
    shutil.copytree(graded["out"], out)
    subs = tmp_path / "subs"
    shutil.copytree(graded["subs"], subs, symlinks=True)
    fixed = _edit(nbformat.read(subs / "gina" / ASSIGNMENT / "sq.ipynb", as_version=4), "square", SOLUTION_SQUARE)
    nbformat.write(fixed, subs / "gina" / ASSIGNMENT / "sq.ipynb")
    bob_feedback = (out / "feedback" / "bob" / ASSIGNMENT / "sq.html").read_bytes()
    done = _grade(subs, out, graded["source"], "--student", "gina")
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    assert float(rows["gina"]["score"]) == 5
    assert {s: r for s, r in rows.items() if s != "gina"} == {
        s: r for s, r in graded["rows"].items() if s != "gina"}
    assert (out / "feedback" / "bob" / ASSIGNMENT / "sq.html").read_bytes() == bob_feedback
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert gb.find_submission(ASSIGNMENT, "gina").score == 5
        assert gb.find_submission(ASSIGNMENT, "alice").score == 5  # the others' records are kept


def test_a_zip_export_grades_like_the_folder(graded, tmp_path):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for student in HONEST:
            for path in (graded["subs"] / student).rglob("*.ipynb"):
                if not path.is_symlink():  # LMS exports wrap everything in one folder
                    z.write(path, Path("course-export") / path.relative_to(graded["subs"]))
        z.writestr("../escape.txt", "a path that leaves the folder is skipped")
    done = _grade(archive, tmp_path / "out", graded["source"])
    assert done.returncode == 0, done.stderr
    rows = _rows(tmp_path / "out")
    assert sorted(rows) == sorted(HONEST)
    assert all(rows[s] == graded["rows"][s] for s in HONEST)
    assert not (tmp_path / "escape.txt").exists()


def test_bad_arguments_exit_2_with_a_message(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "course_lib.grading", *args],
                              capture_output=True, text=True, timeout=120)

    done = run("--submissions", str(tmp_path / "nope"), "--assignment", "ps1_gd_sgd", "--out", str(tmp_path),
               "--unsafe")
    assert done.returncode == 2 and "submissions must be a folder" in done.stderr
    assert "WITHOUT a sandbox" in done.stderr  # --unsafe always warns
    done = run("--submissions", str(tmp_path), "--assignment", "no_such", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "assignment must be one of" in done.stderr
    (tmp_path / "alice").mkdir()
    done = run("--submissions", str(tmp_path), "--assignment", "ps1_gd_sgd", "--out", str(tmp_path / "o"),
               "--student", "zed", "--unsafe")
    assert done.returncode == 2 and "student 'zed' has no folder" in done.stderr


def test_missing_bwrap_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on this PATH
    assert "sudo apt-get install bubblewrap" in sandbox.bwrap_problem()
    assert "UNSAFE=1" in sandbox.bwrap_problem()


def test_make_grade_without_arguments_prints_usage():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-s", "grade"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "usage: make grade SUBMISSIONS=" in done.stdout


@needs_bwrap
def test_sandbox_caps_processes(tmp_path):
    nb = notebook(cell("import subprocess\nprocs = []\ntry:\n    for _ in range(200):\n"
                       "        procs.append(subprocess.Popen(['sleep', '30']))\nexcept OSError:\n    pass\n"
                       "print(len(procs))"))
    executed, reason = sandbox.execute_notebook(nb, None, sandbox.Limits(max_processes=40, cell_timeout=20))
    assert reason is None
    started = int(executed.cells[0].outputs[0]["text"])
    if sandbox.process_cap() == "none":
        pytest.skip("root without a writable pids cgroup: no process cap can be enforced here")
    assert started < 40


@needs_bwrap
def test_sandbox_wall_time_cap(tmp_path):
    nb = notebook(*[cell("import time; time.sleep(2)") for _ in range(5)])
    executed, reason = sandbox.execute_notebook(nb, None, sandbox.Limits(cell_timeout=10, wall_timeout=5))
    assert executed is None and "ran longer than 5 s" in reason


def test_feedback_exporter_shares_its_templates_and_renders_the_same():
    """The workers' feedback exporter compiles the templates once per process; what it renders
    is what a fresh nbconvert HTMLExporter renders (up to the random ids widgets get), notebook
    after notebook."""
    from nbconvert.exporters import HTMLExporter

    from course_lib.grading.worker import shared_templates_exporter

    shared = shared_templates_exporter()
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    paths = [REPO / "lectures" / "01_gd_sgd.ipynb", REPO / "lectures" / "05_randomized_smoothing.ipynb",
             REPO / "lectures" / "01_gd_sgd.ipynb"]
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        fresh, _ = HTMLExporter(sanitize_html=True).from_notebook_node(nb)
        reused, _ = shared(sanitize_html=True).from_notebook_node(nb)
        assert uuid.sub("", reused) == uuid.sub("", fresh), path.name
    assert len(shared._environments) == 1
    assert shared().environment is shared().environment
