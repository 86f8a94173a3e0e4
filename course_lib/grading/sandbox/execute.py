"""Execute one notebook, cell by cell; the program that runs *inside* the grading sandbox.

Usage: ``python -m course_lib.grading.sandbox.execute [--stage FOLDER] IN.ipynb OUT.ipynb CELL_TIMEOUT MAX_OUTPUT_CHARS MEMORY_BYTES``

``--stage FOLDER`` first copies the student's files from FOLDER (read-only) into the current
folder (the sandbox's capped in-memory ``/sandbox/work``). Then it reads IN and deletes it (it
holds the hidden tests), and runs every code cell in a fresh kernel (cwd: IN's folder) with
nbclient, errors allowed.
What nbgrader's own executor would leave ambiguous is made explicit, because a grade
cell with no error output scores full marks:

* a cell that runs past ``CELL_TIMEOUT`` seconds is interrupted and gets a
  ``CellTimeoutError`` output; the next cells still run;
* a cell whose execute reply says "error" but shows no error output (an exception
  swallowed by a custom handler) gets one;
* if the kernel dies (``os._exit``, a crash, the memory cap), the cell that was running
  gets a ``DeadKernelError`` output and every later code cell a ``NotExecuted`` one,
  so no test cell can pass without having run;
* each output's text is cut to ``MAX_OUTPUT_CHARS`` characters.

The trusted side re-checks all of this; this program only makes it visible.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# jsonschema builds an RFC 3987 grammar when rfc3987_syntax is installed: over a second at
# every start of this program, for a URL format check no notebook here needs. Skip it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import DeadKernelError  # noqa: E402
from nbformat import NotebookNode  # noqa: E402


SUBMISSION = "submission.ipynb"  # the notebook to run, in the sandbox's working folder
RESULT = f"{SUBMISSION}.out"  # the executed notebook, in /sandbox
LOG = "exec.log"  # the executor's (and the kernel's) stdout and stderr, in /sandbox
STAGING_FULL = "course_lib: the submission's files do not fit in its working folder"


def copy_regular_files(src: Path, dst: Path, *, notebooks: bool = True) -> None:
    """Copy a student's folder: regular files and folders only. Links are dropped (one could
    point at solutions/ or the gradebook); so are notebooks unless ``notebooks`` (in the
    sandbox the graded ones would hold the hidden tests: the executor gets its own copy)."""
    for root, dirs, files in os.walk(src, followlinks=False):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        for name in files:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink() and (notebooks or path.suffix != ".ipynb"):
                shutil.copyfile(path, dst / rel / name)


@contextlib.contextmanager
def _staging() -> Iterator[None]:
    """Print :data:`STAGING_FULL` to stderr (read back by the grader) when the copy runs out of space."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.ENOSPC:
            print(STAGING_FULL, file=sys.stderr, flush=True)
        raise


def stage(source: str, target: str) -> None:
    """Copy the student's files (folders and regular files, no links) into the sandbox."""
    with _staging():
        copy_regular_files(Path(source), Path(target))


def stage_file(source: str, target: str) -> None:
    """Copy one file into the sandbox."""
    with _staging():
        shutil.copyfile(source, target)


def _error(ename: str, evalue: str) -> NotebookNode:
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _truncate(cell: NotebookNode, limit: int) -> None:
    for output in cell.get("outputs", []):
        if isinstance(output.get("text"), str) and len(output["text"]) > limit:
            output["text"] = output["text"][:limit] + f"\n[... output cut at {limit} characters]\n"
        data = output.get("data", {})
        for key, value in list(data.items()):
            if isinstance(value, str) and len(value) > limit:
                data[key] = value[:limit]
        if "traceback" in output and sum(len(t) for t in output["traceback"]) > limit:
            output["traceback"] = output["traceback"][:5] + ["[... traceback cut]"] + output["traceback"][-5:]


class _CappedClient(NotebookClient):
    """nbclient that stops storing a cell's outputs past a size cap, so that a cell
    printing gigabytes cannot exhaust the executor's memory."""

    max_chars: int = 100_000

    def output(self, outs, msg, display_id, cell_index):
        stored = sum(len(str(o.get("text", ""))) + len(str(o.get("data", ""))) for o in outs)
        if stored > 2 * self.max_chars:
            if not outs or outs[-1].get("name") != "cut":
                outs.append(nbformat.v4.new_output("stream", name="stdout",
                                                   text="\n[... further output dropped]\n"))
                outs[-1]["name"] = "cut"
            return None
        return super().output(outs, msg, display_id, cell_index)


def _capped_kernelspec(memory_bytes: int) -> str:
    """Register a kernel that starts under the memory cap; returns its name."""
    root = tempfile.mkdtemp(prefix="kernelspec_")
    folder = os.path.join(root, "kernels", "course-sandbox")
    os.makedirs(folder)
    spec = {"argv": [sys.executable, "-m", "course_lib.grading.sandbox.kernel", str(memory_bytes),
                     "-f", "{connection_file}"],
            "display_name": "Python 3 (grading sandbox)", "language": "python"}
    with open(os.path.join(folder, "kernel.json"), "w") as f:
        json.dump(spec, f)
    os.environ["JUPYTER_PATH"] = root
    return "course-sandbox"


def run(in_path: str, out_path: str, cell_timeout: int, max_chars: int, memory_bytes: int,
        km=None) -> None:
    """Execute IN into OUT. ``km``: a kernel manager whose kernel already runs under the memory
    cap (the zygote's forked kernel); None starts a fresh kernel from a capped kernelspec."""
    nb = nbformat.read(in_path, as_version=4)
    os.remove(in_path)  # it holds the hidden tests: student code must not read it from disk
    folder = in_path.rsplit("/", 1)[0] if "/" in in_path else "."

    def on_cell_executed(cell, cell_index, execute_reply):
        content = execute_reply.get("content", {}) if execute_reply else {}
        if content.get("status") == "error" and not any(o.output_type == "error" for o in cell.outputs):
            cell.outputs.append(_error(content.get("ename", "Error"), content.get("evalue", "")))

    timeout_error = {"ename": "CellTimeoutError", "evalue": f"the cell ran longer than {cell_timeout} s",
                     "traceback": [f"CellTimeoutError: the cell ran longer than {cell_timeout} s and was interrupted"]}
    client = _CappedClient(nb, timeout=cell_timeout, interrupt_on_timeout=True, allow_errors=True,
                            error_on_timeout=timeout_error,
                            record_timing=False,
                            resources={"metadata": {"path": folder}},
                            on_cell_executed=on_cell_executed,
                            **({"km": km} if km is not None else {"kernel_name": _capped_kernelspec(memory_bytes)}))
    client.max_chars = max_chars
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    with client.setup_kernel():
        for position, index in enumerate(code_cells):
            cell = nb.cells[index]
            start = time.monotonic()
            try:
                client.execute_cell(cell, index)
                interrupted = any(o.get("ename") == "KeyboardInterrupt" for o in cell.outputs)
                if interrupted and time.monotonic() - start >= cell_timeout:
                    cell.outputs.append(_error(**{k: timeout_error[k] for k in ("ename", "evalue")}))
            except DeadKernelError:
                cell.outputs.append(_error("DeadKernelError", "the kernel died while running this cell"))
                for later in code_cells[position + 1:]:
                    nb.cells[later].outputs = [_error("NotExecuted", "not run: the kernel died in an earlier cell")]
                break
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == "cut":
                output["name"] = "stdout"
        _truncate(cell, max_chars)
    nbformat.write(nb, out_path)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--stage"]:
        stage(argv[1], ".")
        argv = argv[2:]
    run(argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4]))


if __name__ == "__main__":
    main(sys.argv[1:])
