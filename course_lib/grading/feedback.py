"""nbgrader preprocessors for the feedback students get back.

nbgrader's ``ClearHiddenTests`` removes hidden test code from the test cells shown in
feedback, but a test cell that raised still carries IPython's traceback, which
quotes the lines around the failure, hidden ones included. :class:`HideHiddenTestTracebacks`
shortens the traceback of such a cell to its last line (``AssertionError: message``),
so hidden tests can be used again next year. It must run before ``ClearHiddenTests``
(it looks for the hidden-test markers); ``nbgrader_config.py`` orders them.
"""

from __future__ import annotations

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"


class HideHiddenTestTracebacks(Preprocessor):
    """Reduce the traceback of a failed test cell that holds hidden tests to ``ename: evalue``."""

    enabled = Bool(True, help="nbconvert skips preprocessors that are not enabled").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        nbgrader = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and nbgrader.get("grade") and BEGIN_HIDDEN in cell.source:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    message = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".rstrip(": ")
                    output["traceback"] = [message, "(the traceback is hidden: this cell holds hidden tests)"]
        return cell, resources
