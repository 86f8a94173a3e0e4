"""Check an assignment notebook before handing it in (``make validate NOTEBOOK=...``).

Runs the notebook top to bottom in a fresh kernel, as the grader will, and says in
plain words what would cost points: a task still unanswered, a visible test that fails,
a written answer left empty, a cell that crashes. Hidden tests are not here: passing
this check means the visible tests pass, not that every point is won.

Cells get the grader's time limit (:class:`course_lib.grading.sandbox.Limits`, 60 s a cell): a
cell that runs longer is stopped here too, and the later cells still run; a cell that takes
more than half of it is pointed out, since the grading machine may be slower.

Exit code 0 when nothing was found, 1 otherwise, 2 when the file cannot be read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

from datetime import datetime

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from course_lib.grading.sandbox import Limits

STUB = "YOUR ANSWER HERE"
CELL_TIMEOUT = Limits().cell_timeout  # what the grader allows one cell
TIMED_OUT = "CellTimeoutError"


def _seconds(cell) -> float | None:
    """How long the cell ran, from the timing nbclient records in its metadata."""
    timing = cell.metadata.get("execution", {})
    try:
        start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                      for k in ("iopub.execute_input", "shell.execute_reply"))
    except (KeyError, ValueError, AttributeError):
        return None
    return (end - start).total_seconds()


def _error_line(cell) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            value = str(output.get("evalue", "")).strip().splitlines()
            return f"{output.get('ename', 'Error')}: {value[0]}" if value else output.get("ename", "Error")
    return None


def check(path: Path, timeout: int = CELL_TIMEOUT) -> list[str]:
    """Problems found in the notebook at ``path``, each a sentence for the student; ``timeout``
    is the seconds one cell may run (the grader's limit)."""
    nb = nbformat.read(path, as_version=4)
    stopped = {"ename": TIMED_OUT, "evalue": f"the cell ran longer than {timeout} s",
               "traceback": [f"{TIMED_OUT}: the cell ran longer than {timeout} s and was stopped"]}
    client = NotebookClient(nb, timeout=timeout, interrupt_on_timeout=True, error_on_timeout=stopped,
                            allow_errors=True, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    problems = []
    try:  # NBGRADER_EXECUTION as nbgrader's validator sets it, for the kernel to see
        with mock.patch.dict(os.environ, {"NBGRADER_EXECUTION": "validate"}):
            client.execute(stderr=subprocess.DEVNULL)  # the kernel's own log lines are noise here
    except DeadKernelError:
        problems.append("The kernel died while running your notebook (os._exit, a crash, or out of memory); "
                        "the cells after that did not run.")
    for index, cell in enumerate(nb.cells, start=1):
        meta = cell.metadata.get("nbgrader", {})
        name = meta.get("grade_id") or f"number {index}"
        if meta.get("solution"):
            if cell.cell_type == "markdown" and STUB in cell.source:
                problems.append(f"You have not answered the written question in cell {name} yet.")
            elif cell.cell_type == "code" and "raise NotImplementedError" in cell.source:
                problems.append(f"The task in cell {name} is not done yet (it still raises NotImplementedError).")
                continue
        error = _error_line(cell) if cell.cell_type == "code" else None
        seconds = _seconds(cell) if cell.cell_type == "code" else None
        if error is None:
            if seconds is not None and seconds > timeout / 2:
                problems.append(f"Cell {name} took {seconds:.0f} s; the grader stops a cell after {timeout} s, "
                                "and its machine may be slower than yours: make it faster.")
            continue
        is_test = meta.get("grade") and not meta.get("solution")
        # a cell stopped at the limit shows the interrupt (or, if that failed, TIMED_OUT)
        interrupted = error.startswith("KeyboardInterrupt") and (seconds is None or seconds >= 0.9 * timeout)
        if error.startswith(TIMED_OUT) or interrupted:
            problems.append(f"Cell {name} ran longer than {timeout} s, the grader's limit for one cell, and was "
                            "stopped (an endless loop, or code too slow); at grading it would score nothing.")
        elif error.startswith("NotImplementedError"):
            if is_test:
                problems.append(f"The visible tests in cell {name} cannot pass until the tasks they test are done.")
        elif is_test:
            problems.append(f"The visible tests in cell {name} fail: {error}")
        else:
            problems.append(f"Cell {name} raises an error: {error}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m course_lib.grading.validate NOTEBOOK.ipynb", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        problems = check(path)
    except (OSError, ValueError, nbformat.reader.NotJSONError) as err:
        print(f"Could not read {path}: {err}", file=sys.stderr)
        return 2
    if not problems:
        print(f"{path.name}: your notebook runs top to bottom and every visible test passes. "
              "Hidden tests also run at grading time, so check your answers' edge cases too.")
        return 0
    print(f"{path.name}: {len(problems)} thing(s) to fix before you hand in:")
    for p in problems:
        print(f"  - {p}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
