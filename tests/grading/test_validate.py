"""`make validate NOTEBOOK=...`: a student's check before hand-in, in the student's words."""

import re
import subprocess
import sys

import nbformat
import pytest

from course_lib import validate
from course_lib.grading.release import generate_release
from nbgrader_helpers import square_assignment

pytestmark = pytest.mark.grading


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    (root / "solutions" / "sq").mkdir(parents=True)
    nbformat.write(square_assignment(), root / "solutions" / "sq" / "sq.ipynb")
    release = generate_release("sq", root / "release", source_root=root / "solutions") / "sq.ipynb"
    wrong = nbformat.read(root / "solutions" / "sq" / "sq.ipynb", as_version=4)
    wrong.cells[3].source = "def cube(x):\n    return x * x"
    nbformat.write(wrong, root / "wrong.ipynb")
    return {"solution": root / "solutions" / "sq" / "sq.ipynb", "release": release, "wrong": root / "wrong.ipynb"}


def test_untouched_release_lists_every_task(notebooks):
    problems = validate.check(notebooks["release"])
    assert "The task in cell square is not done yet (it still raises NotImplementedError)." in problems
    assert "The task in cell cube is not done yet (it still raises NotImplementedError)." in problems
    assert "You have not answered the written question in cell why yet." in problems
    assert "The visible tests in cell test_square cannot pass until the tasks they test are done." in problems


def test_a_failing_visible_test_is_named(notebooks):
    assert validate.check(notebooks["wrong"]) == ["The visible tests in cell test_cube fail: AssertionError"]


def test_command_line_exit_codes(notebooks, tmp_path):
    def run(path):
        return subprocess.run([sys.executable, "-m", "course_lib.grading.validate", str(path)],
                              capture_output=True, text=True, timeout=300)

    ok = run(notebooks["solution"])
    assert ok.returncode == 0 and "every visible test passes" in ok.stdout
    bad = run(notebooks["release"])
    assert bad.returncode == 1 and "to fix before you hand in" in bad.stdout
    (tmp_path / "broken.ipynb").write_text("{ not json")
    assert run(tmp_path / "broken.ipynb").returncode == 2


def test_a_cell_past_the_graders_time_limit_is_stopped_and_a_slow_one_pointed_out(notebooks, tmp_path):
    """The grader stops a cell after 60 s (Limits.cell_timeout); the check uses the same limit,
    so an endless loop is reported in words and the later cells still run."""
    assert validate.CELL_TIMEOUT == validate.Limits().cell_timeout == 60
    nb = nbformat.read(notebooks["solution"], as_version=4)
    nb.cells[3].source = "def cube(x):\n    return x ** 3\nwhile True:\n    pass"
    nbformat.write(nb, tmp_path / "loop.ipynb")
    problems = validate.check(tmp_path / "loop.ipynb", timeout=3)
    assert problems == ["Cell cube ran longer than 3 s, the grader's limit for one cell, and was stopped "
                        "(an endless loop, or code too slow); at grading it would score nothing."]
    nb.cells[3].source = "import time\ndef cube(x):\n    return x ** 3\ntime.sleep(2.5)"
    nbformat.write(nb, tmp_path / "slow.ipynb")
    slow = validate.check(tmp_path / "slow.ipynb", timeout=4)
    assert len(slow) == 1 and re.match(r"Cell cube took [23] s; the grader stops a cell after 4 s", slow[0]), slow


def test_the_kernel_sees_nbgrader_execution_validate_and_the_caller_keeps_its_own(tmp_path, monkeypatch):
    # nbgrader's validator sets NBGRADER_EXECUTION=validate (its FAQ: notebooks may skip slow cells on it)
    monkeypatch.setenv("NBGRADER_EXECUTION", "the caller's")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nassert os.environ['NBGRADER_EXECUTION'] == 'validate'")]
    nbformat.write(nb, tmp_path / "env.ipynb")
    assert validate.check(tmp_path / "env.ipynb") == []
    nb.cells = [nbformat.v4.new_code_cell("import os\nassert os.environ['NBGRADER_EXECUTION'] == 'autograde'")]
    nbformat.write(nb, tmp_path / "env.ipynb")
    assert validate.check(tmp_path / "env.ipynb") == ["Cell number 1 raises an error: AssertionError"]
    import os

    assert os.environ["NBGRADER_EXECUTION"] == "the caller's"
