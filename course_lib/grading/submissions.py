"""A class's submissions before grading: unpacked, checked, and repaired for nbgrader.

What comes in is untrusted: a folder (or an LMS's zip) of ``<student>/<assignment>/*.ipynb``.

* :func:`open_submissions` unpacks a zip safely (no absolute paths, no ``..``, no links,
  bounded size; each folder without a ``timestamp.txt`` gets one from its newest entry's
  time, the LMS's hand-in time) and finds the folder of student folders; :func:`student_folders` lists them;
* :func:`check_submission` checks one student's folder (a valid id, a notebook present (a
  missing one of several scores 0, as in nbgrader),
  valid nbformat 4 JSON, not oversized, from this assignment and not another) and notes
  edited locked cells;
* :func:`repair` then gives each notebook exactly the graded cells of the release, once each,
  with two nbgrader preprocessors, so that nbgrader can grade it whatever a student did to
  the cells: :class:`DemoteStrayGradedCells` (a copied graded cell, or one with an unknown
  ``grade_id``, becomes an ordinary cell) and :class:`RestoreDeletedGradedCells` (a deleted
  graded cell is put back). nbgrader 0.9 fails the whole notebook (``KeyError``) on a
  repeated or unknown ``grade_id``, and when the cell it would put a deleted test after is
  missing too;
* :func:`stage` copies a checked folder into the course's ``submitted/``.

Every refusal is one deterministic line, the reason in ``grades.csv``.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List, Set, Unicode

from course_lib.grading import sandbox
from course_lib.grading.late import TIMESTAMP, zip_time
from course_lib.grading.release import list_assignments

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
MAX_NOTEBOOK_BYTES = 50 * 2**20
MAX_ZIP_BYTES = 4 * 2**30
HIDDEN_MARKER = re.compile(r"^(\s*#+\s*(?:BEGIN|END) )HIDDEN TESTS", re.MULTILINE)


class GradingError(RuntimeError):
    """The run itself cannot go on (bad arguments, no sandbox, a broken source)."""


@dataclass
class AssignmentSource:
    """What the trusted side knows of the assignment, from the source and its release."""

    notebooks: list[str]
    grade_ids: dict[str, set[str]]  # notebook -> every nbgrader grade_id in it
    test_ids: dict[str, list[str]]  # notebook -> autograded test cells, in order
    locked: dict[str, dict[str, str]]  # notebook -> grade_id -> released source of locked cells
    others: dict[str, set[str]] = field(default_factory=dict)  # other assignment -> its grade_ids
    released: dict[str, list[nbformat.NotebookNode]] = field(default_factory=dict)  # notebook -> its nbgrader cells, in order


def nbgrader_cells(nb) -> dict[str, nbformat.NotebookNode]:
    """The cells of ``nb`` that carry an nbgrader ``grade_id``, by id (a repeated id: the last).

    Examples:
        >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
        ...     nbformat.v4.new_code_cell("y = 2", metadata={"nbgrader": {"grade_id": "part_a"}})])
        >>> list(nbgrader_cells(nb))
        ['part_a']
    """
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells
            if isinstance(c.get("metadata", {}).get("nbgrader"), dict)
            and "grade_id" in c.metadata["nbgrader"]}


def read_source(source_root: Path, assignment: str, release: Path) -> AssignmentSource:
    """The graded cells of ``assignment`` (source and its ``release`` folder) and the grade_ids
    of every other assignment under ``source_root`` (to recognize a notebook handed in to the
    wrong one)."""
    notebooks = sorted(p.name for p in (source_root / assignment).glob("*.ipynb"))
    info = AssignmentSource(notebooks, {}, {}, {})
    for name in notebooks:
        cells = nbgrader_cells(nbformat.read(source_root / assignment / name, as_version=4))
        info.grade_ids[name] = set(cells)
        info.test_ids[name] = [gid for gid, c in cells.items() if c.metadata["nbgrader"].get("grade")
                               and not c.metadata["nbgrader"].get("solution") and c.cell_type == "code"]
        released = nbgrader_cells(nbformat.read(release / name, as_version=4))
        info.locked[name] = {gid: c.source for gid, c in released.items() if c.metadata["nbgrader"].get("locked")}
        info.released[name] = list(released.values())
    for other in list_assignments(source_root):
        if other != assignment:
            ids: set[str] = set()
            for path in (source_root / other).glob("*.ipynb"):
                ids |= set(nbgrader_cells(nbformat.read(path, as_version=4)))
            info.others[other] = ids
    return info


# -- the repair, as nbgrader preprocessors ------------------------------------------------


def _rename_hidden_markers(source: str) -> str:
    """Hidden-test markers in an ordinary cell (comments there) renamed: nbgrader would refuse
    to render the feedback of a notebook whose ordinary cells hold them."""
    return HIDDEN_MARKER.sub(r"\1HIDDEN-TESTS", source)


class DemoteStrayGradedCells(NbGraderPreprocessor):
    """Make every graded cell that is not one of this notebook's, or repeats an earlier cell's
    ``grade_id`` (a cell copied in JupyterLab keeps its metadata), an ordinary cell: it still
    runs, it is just not graded itself. Hidden-test markers in ordinary cells are renamed.

    Appends one note per demoted cell to ``resources["repair_notes"]``.
    """

    grade_ids = Set(Unicode(), help="the grade_ids of this notebook in the source").tag(config=True)

    def preprocess(self, nb, resources):
        self._present: set[str] = set()
        resources.setdefault("repair_notes", [])
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            cell.source = _rename_hidden_markers(cell.get("source", ""))
            return cell, resources
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if gid in self.grade_ids and gid not in self._present:
            self._present.add(gid)
            return cell, resources
        del cell.metadata["nbgrader"]
        cell.source = _rename_hidden_markers(cell.get("source", ""))
        what = "a copy of graded cell" if gid in self._present else "a cell with an unknown id"
        resources["repair_notes"].append(f"{what} {str(gid)[:40]} was graded as an ordinary cell")
        return cell, resources


class RestoreDeletedGradedCells(NbGraderPreprocessor):
    """Put each deleted graded cell back where it was, after the graded cell before it: test
    and locked cells from the release (nbgrader's ``OverwriteCells`` then restores their
    source, hidden tests included), solution cells as an empty placeholder, so that code the
    student moved into another cell is not overwritten by the release's stub.

    Appends one note per restored cell to ``resources["repair_notes"]``.
    """

    released = List(help="the release's graded cells of this notebook, in order").tag(config=True)
    test_ids = List(Unicode(), help="the grade_ids of its autograded test cells").tag(config=True)

    def preprocess(self, nb, resources):
        notes = resources.setdefault("repair_notes", [])
        present = {c.metadata["nbgrader"].get("grade_id") for c in nb.cells
                   if isinstance(c.get("metadata", {}).get("nbgrader"), dict)}
        order = [c.metadata["nbgrader"]["grade_id"] for c in self.released]
        for i, released in enumerate(self.released):
            gid = order[i]
            if gid in present:
                continue
            before = [j for j, c in enumerate(nb.cells)
                      if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") in order[:i]]
            cell = nbformat.from_dict(json.loads(json.dumps(released)))  # a deep copy
            meta = cell.metadata["nbgrader"]
            if meta.get("solution"):
                cell.source = "# this cell was missing from the submission" if cell.cell_type == "code" else ""
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            nb.cells.insert(before[-1] + 1 if before else 0, cell)
            present.add(gid)
            kind = "test" if gid in self.test_ids else "solution" if meta.get("solution") else "locked"
            notes.append(f"{kind} cell {gid} was deleted (restored{' from source' if kind != 'solution' else ' empty'})")
        return nb, resources


def repair(nb: nbformat.NotebookNode, name: str, src: AssignmentSource) -> list[str]:
    """Give ``nb`` (the notebook ``name`` of a submission, changed in place) exactly the graded
    cells of the release, once each; returns notes for the TA, one line per change."""
    resources: dict = {"repair_notes": []}
    steps = [DemoteStrayGradedCells(grade_ids=src.grade_ids[name]),
             RestoreDeletedGradedCells(released=src.released[name], test_ids=src.test_ids[name])]
    for step in steps:
        nb, resources = step(nb, resources)
    return resources["repair_notes"]


# -- checks ---------------------------------------------------------------------------------


def _read_notebook(path: Path, name: str) -> tuple[nbformat.NotebookNode | None, str | None]:
    """(the notebook at ``path``, None), or (None, why it cannot be graded)."""
    if path.is_symlink() or not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.ipynb"))
        return None, f"notebook {name} is missing (found: {', '.join(found)[:200] or 'no notebooks'})"
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        return None, f"{name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, f"{name} is not valid notebook JSON"
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        return None, f"{name} is not valid notebook JSON"
    minor = raw.get("nbformat_minor")
    if raw.get("nbformat") == 4 and isinstance(minor, int) and minor < 5 and any(
            isinstance(c, dict) and "id" in c for c in raw["cells"]):
        raw = {**raw, "nbformat_minor": 5}  # 4.5's cell ids under an older number, as editors write them:
        # read as 4.5, the way nbgrader grades it (with a warning)
    try:
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
    except Exception:  # nbformat raises several kinds of validation errors
        return None, f"{name} is not a valid Jupyter notebook (nbformat 4)"
    return nb, None


def _wrong_assignment(nb: nbformat.NotebookNode, name: str, assignment: str, src: AssignmentSource) -> str | None:
    """Why ``nb`` is not this assignment's notebook ``name``, or None."""
    cells = set(nbgrader_cells(nb))
    ours = cells & src.grade_ids[name]
    best = max(src.others, key=lambda a: len(cells & src.others[a]), default=None)
    # another assignment's notebook under this name: it shares more cells with that one
    # (two assignments may share generic cell names such as "setup" or "part_a")
    if best is not None and len(cells & src.others[best]) > len(ours):
        return f"notebook is from assignment {best}"
    if not ours and src.grade_ids[name]:  # a source without graded cells is graded 0/0, as nbgrader does
        return f"{name} has none of the cells of {assignment}"
    return None


def check_submission(folder: Path, student: str, assignment: str,
                     src: AssignmentSource) -> tuple[str | None, list[str], dict[str, nbformat.NotebookNode]]:
    """(reason it cannot be graded or None, notes for the TA, the notebooks repaired for
    nbgrader by :func:`repair`) for one student's folder."""
    if not STUDENT_ID.match(student):
        return "student folder name must be letters, digits, '.', '_', '@' or '-'", [], {}
    work = folder / assignment
    if not work.is_dir() or work.is_symlink():
        return f"no folder {assignment}/ inside the student's folder", [], {}
    notes: list[str] = []
    repaired: dict[str, nbformat.NotebookNode] = {}
    handed_in = [n for n in src.notebooks if (work / n).is_file() and not (work / n).is_symlink()]
    for name in src.notebooks:
        if handed_in and name not in handed_in:  # nbgrader scores a missing notebook 0, grades the others
            notes.append(f"notebook {name} is missing (scored 0)")
            continue
        nb, reason = _read_notebook(work / name, name)
        reason = reason or _wrong_assignment(nb, name, assignment, src)
        if reason:
            return reason, [], {}
        cells = nbgrader_cells(nb)
        for gid, released in src.locked[name].items():
            if gid in cells and cells[gid].source != released:
                notes.append(f"locked cell {gid} was edited (restored from source)")
        notes += repair(nb, name, src)
        repaired[name] = nb
    return None, notes, repaired


# -- the folder of submissions --------------------------------------------------------------


def unpack_zip(path: Path, dest: Path, assignment: str) -> Path:
    """Unpack an LMS export safely (no absolute paths, no '..', no links, bounded size) into
    ``dest``; returns the folder of student folders (inside one wrapping folder, if any)."""
    total = 0
    times: dict[Path, tuple] = {}  # each folder -> its newest entry's time
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
                if target.suffix == ".ipynb":
                    times[target.parent] = max(times.get(target.parent, info.date_time), info.date_time)
    except zipfile.BadZipFile as err:
        raise GradingError(f"submissions {str(path)!r} is not a readable zip file") from err
    for folder, when in times.items():  # the LMS's hand-in time, where no timestamp.txt says it
        if not (folder / TIMESTAMP).exists():
            (folder / TIMESTAMP).write_text(zip_time(when) + "\n", encoding="utf-8")
    entries = [p for p in dest.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and not (entries[0] / assignment).is_dir():
        return entries[0]  # one wrapping folder around the student folders
    return dest


def open_submissions(submissions: Path, scratch: Path, assignment: str) -> Path:
    """The folder of student folders: ``submissions`` itself, or a zip of it unpacked under
    ``scratch``. Raises :class:`GradingError` when it is neither."""
    if submissions.is_file() and zipfile.is_zipfile(submissions):
        (scratch / "unzipped").mkdir()
        submissions = unpack_zip(submissions, scratch / "unzipped", assignment)
    if not submissions.is_dir():
        raise GradingError(f"submissions must be a folder or a zip of <student>/{assignment}/*.ipynb, "
                           f"got {str(submissions)!r}")
    return submissions


def student_folders(submissions: Path) -> list[str]:
    """The students of a folder of submissions: its folders not hidden, sorted."""
    return sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))


def stage(folder: Path, target: Path, repaired: dict[str, nbformat.NotebookNode]) -> None:
    """Copy a student's checked ``folder`` (regular files only, no links) to ``target`` in the
    course's ``submitted/``, with the notebooks as :func:`repair` left them."""
    if target.exists():
        shutil.rmtree(target)
    sandbox.copy_regular_files(folder, target)
    for name, nb in repaired.items():
        nbformat.write(nb, target / name)
