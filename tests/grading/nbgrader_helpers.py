"""Build small nbgrader notebooks in tests (cells with the metadata nbgrader reads)."""

from __future__ import annotations

import nbformat


def cell(source: str, *, kind: str = "code", grade_id: str | None = None, solution: bool = False,
         grade: bool = False, points: float = 0, locked: bool = False) -> nbformat.NotebookNode:
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    c = make(source)
    if grade_id is not None:
        meta = {"schema_version": 3, "grade_id": grade_id, "solution": solution, "grade": grade,
                "locked": locked, "task": False}
        if grade:
            meta["points"] = points
        c.metadata["nbgrader"] = meta
    return c


def notebook(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def square_assignment() -> nbformat.NotebookNode:
    """A two-task source notebook: `square` (2 points), `cube` (3 points), one written answer (1 point)."""
    return notebook(
        cell("import math", grade_id="setup", locked=True),
        cell("def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION",
             grade_id="square", solution=True),
        cell("assert square(3) == 9\n### BEGIN HIDDEN TESTS\nassert square(-4) == 16\n### END HIDDEN TESTS",
             grade_id="test_square", grade=True, points=2, locked=True),
        cell("def cube(x):\n    ### BEGIN SOLUTION\n    return x ** 3\n    ### END SOLUTION",
             grade_id="cube", solution=True),
        cell("assert cube(2) == 8\nassert cube(-1) == -1", grade_id="test_cube", grade=True, points=3,
             locked=True),
        cell("Why?", kind="markdown", grade_id="why_q", locked=True),
        cell("### BEGIN SOLUTION\nBecause.\n### END SOLUTION", kind="markdown", grade_id="why",
             solution=True, grade=True, points=1),
    )
