"""Check an assignment notebook before handing it in (``make validate NOTEBOOK=...``).

Runs the notebook top to bottom in a fresh kernel, as the grader will, and says in
plain words what would cost points: a task still unanswered, a visible test that fails,
a written answer left empty, a cell that crashes. Hidden tests are not here: passing
this check means the visible tests pass, not that every point is won.

Exit code 0 when nothing was found, 1 otherwise, 2 when the file cannot be read.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

STUB = "YOUR ANSWER HERE"


def _error_line(cell) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            value = str(output.get("evalue", "")).strip().splitlines()
            return f"{output.get('ename', 'Error')}: {value[0]}" if value else output.get("ename", "Error")
    return None


def check(path: Path, timeout: int = 300) -> list[str]:
    """Problems found in the notebook at ``path``, each a sentence for the student."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    problems = []
    try:
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
        if error is None:
            continue
        is_test = meta.get("grade") and not meta.get("solution")
        if error.startswith("NotImplementedError"):
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
        print("usage: python -m course_lib.validate NOTEBOOK.ipynb", file=sys.stderr)
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
