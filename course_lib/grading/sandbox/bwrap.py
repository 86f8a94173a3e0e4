"""Run a student's notebook in a bubblewrap sandbox with resource caps (used by grading).

What the sandbox (``bwrap``) gives each submission:

* its own mount namespace built from scratch: the system folders (``/usr``, ``/lib*``,
  ``/bin``, ``/sbin``, ``/etc``), the Python installation, the virtual environment and
  the ``course_lib`` package, all **read-only**; a private, empty ``/tmp`` (also ``HOME``);
  and one writable folder holding a *copy* of the student's files. The project
  (``solutions/``, the gradebook, other students' folders, the output folder, the user's
  home) is simply not there;
* no network (a new network namespace with loopback only), its own PID, IPC and UTS
  namespaces, a new session (no access to the terminal), and it dies with the grader;
* no capabilities (``--cap-drop ALL``): graded as root, bwrap would otherwise leave the
  sandbox every capability of its user namespace, and with CAP_SYS_ADMIN student code can
  remount the read-only folders read-write and change the venv or ``course_lib``;
* resource limits: the kernel's data memory (``RLIMIT_DATA``, heap and anonymous
  mappings: what NumPy and PyTorch allocate; see :mod:`course_lib.grading.sandbox.kernel`), and,
  set with ``setrlimit`` before the sandbox starts, the
  number of processes (a ``pids`` cgroup when one can be made, else ``RLIMIT_NPROC`` on
  top of the user's current count; root ignores RLIMIT_NPROC, so root without cgroups has
  no process cap: :func:`process_cap` says which applies), the size of any file written
  (``RLIMIT_FSIZE``), and core dumps off;
* nothing it writes reaches the grader's disk except its two result files: the working
  folder ``/sandbox/work``, ``/tmp`` and ``/dev/shm`` are in-memory folders of at most
  ``scratch_bytes`` each, and the executed notebook and the log are the only files of the
  grader's it can write (each at most ``RLIMIT_FSIZE``). Without these caps one submission
  could fill the grader's memory or disk and fail everyone graded after it;
* a per-cell timeout (the cell is interrupted; later cells run) and a wall-time cap for
  the whole submission (everything in the sandbox is killed).

:func:`execute_notebook` builds that sandbox from scratch for one submission;
:class:`~course_lib.grading.sandbox.zygote_client.Zygote` (in its own module, which builds on
this one; ``course_lib.grading.sandbox.Zygote`` is the same class) builds it once per grading worker around a pre-imported Python that forks each
submission a child with fresh namespaces of its own (:mod:`course_lib.grading.sandbox.zygote`).

The public helpers here (:func:`bwrap_base`, :func:`sandbox_env`, :func:`process_limits`,
:func:`fill_box`, :func:`read_back`, ...) are the building blocks both share.

Without ``bwrap`` the same executor runs as a plain child process with the same
resource limits but no filesystem or network isolation: only with ``unsafe=True``.
"""

from __future__ import annotations

import ast
import functools
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

import course_lib
from course_lib import _checks
from course_lib.grading.sandbox.execute import LOG, RESULT, STAGING_FULL, SUBMISSION, copy_regular_files

BWRAP_HELP = ("bubblewrap (bwrap) is needed to isolate student code: install it with "
              "`sudo apt-get install bubblewrap` (Debian/Ubuntu) or `sudo dnf install bubblewrap`; "
              "or grade without isolation with UNSAFE=1 (only for submissions you trust)")


FIELDS = ("cell_timeout", "wall_timeout", "memory_bytes", "max_processes", "max_file_bytes",
          "max_output_chars", "scratch_bytes")


@dataclass(frozen=True)
class Limits:
    """Resource caps for one submission; the defaults are the documented ones.

    Every field is a count >= 1 (a Python, NumPy or 0-d tensor integer; stored as ``int``).

    Examples:
        >>> Limits(cell_timeout=30).cell_timeout, Limits().wall_timeout
        (30, 600)
        >>> Limits(memory_bytes=2 * 2**30).memory_bytes // 2**30
        2
    """

    cell_timeout: int = 60  # seconds one cell may run before it is interrupted
    wall_timeout: int = 600  # seconds for the whole submission, kernel start included
    memory_bytes: int = 4 * 2**30  # RLIMIT_DATA of the kernel (where student code runs)
    max_processes: int = 64  # processes and threads of the sandbox's user
    max_file_bytes: int = 256 * 2**20  # largest file any sandboxed process may write
    max_output_chars: int = 100_000  # each cell output's text is cut to this length
    scratch_bytes: int = 512 * 2**20  # size of each in-memory folder: /sandbox/work, /tmp, /dev/shm

    def __post_init__(self) -> None:
        for name in FIELDS:  # each a count >= 1, stored as a Python int (it travels as JSON)
            object.__setattr__(self, name, _checks.integer(getattr(self, name), name, ge=1))


def bwrap_problem() -> str | None:
    """None when bubblewrap can build a sandbox here, else a one-line explanation."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap is not installed; " + BWRAP_HELP
    probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"bwrap cannot create namespaces here ({probe.stderr.strip()[:200]}); " + BWRAP_HELP
    return None


def _readonly_paths() -> list[str]:
    """What the sandbox needs to see: the system, Python, the venv, course_lib."""
    paths = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc"]
    paths += [sys.base_prefix, sys.prefix, str(Path(course_lib.__file__).resolve().parent)]
    paths += [sysconfig.get_paths()["stdlib"]]
    seen, keep = set(), []
    for p in paths:
        real = os.path.realpath(p)
        if os.path.exists(p) and p not in seen:
            seen.add(p)
            keep.append(p)
            if real != p and real not in seen and os.path.exists(real):
                seen.add(real)
                keep.append(real)
    return keep


@functools.cache
def bwrap_caps_tmpfs() -> bool:
    """Whether this bwrap can cap a tmpfs's size (``--size``, bubblewrap 0.7 and later)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    return "--size" in subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30).stdout


def _tmpfs(path: str, limits: Limits | None) -> list[str]:
    """bwrap arguments for an empty in-memory folder at ``path``, capped at ``limits.scratch_bytes``
    where bwrap can cap it (:func:`bwrap_caps_tmpfs`)."""
    if limits is not None and bwrap_caps_tmpfs():
        return ["--size", str(limits.scratch_bytes), "--tmpfs", path]
    return ["--tmpfs", path]


def bwrap_base(limits: Limits | None = None) -> list[str]:
    """The bwrap command line every sandbox starts from: new namespaces, no capabilities, the
    read-only system (:func:`_readonly_paths`), fresh ``/proc``, ``/dev``, ``/tmp``, ``/dev/shm``."""
    # --cap-drop ALL: run as root, bwrap would otherwise keep the capabilities of its new user
    # namespace, and CAP_SYS_ADMIN there can remount the read-only binds read-write
    cmd = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--new-session",
           "--proc", "/proc", "--dev", "/dev", *_tmpfs("/tmp", limits), *_tmpfs("/dev/shm", limits),
           "--remount-ro", "/dev"]  # /dev's own tmpfs has no cap: nothing may be created there
    for path in _readonly_paths():
        cmd += ["--ro-bind", path, path]
    return cmd


def _bwrap_command(box: Path, limits: Limits, notebook_fd: int) -> list[str]:
    """The sandbox of one submission: its files read-only at /sandbox/input (the executor copies
    them into the in-memory /sandbox/work), the notebook copied in from ``notebook_fd``, and the
    box's result file bound at /sandbox/submission.ipynb.out: nothing else of the grader's disk
    is writable."""
    return bwrap_base(limits) + [
        *_tmpfs("/sandbox", limits), "--dir", "/sandbox/work", "--ro-bind", str(box / "work"), "/sandbox/input",
        "--file", str(notebook_fd), f"/sandbox/work/{SUBMISSION}", "--bind", str(box / RESULT), f"/sandbox/{RESULT}",
        "--remount-ro", "/", "--chdir", "/sandbox/work", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp"]


def _user_process_count() -> int:
    """How many processes (threads included) this user runs now, as RLIMIT_NPROC counts them."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass  # gone meanwhile
    return count


def limit_resources(limits: Limits, nproc: int | None, cgroup: Path | None):
    """The child's set-up before exec: rlimits, and joining the pids cgroup if there is one."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    return apply


def _own_cgroup_dirs() -> list[Path]:
    """Folders where a child pids cgroup could be made (cgroup v1's pids hierarchy, or v2)."""
    dirs = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return dirs
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            dirs.append(Path("/sys/fs/cgroup/pids") / path.lstrip("/"))
        elif controllers == "":  # cgroup v2
            dirs.append(Path("/sys/fs/cgroup") / path.lstrip("/"))
    return dirs


def make_pids_cgroup(max_processes: int) -> Path | None:
    """A fresh cgroup whose ``pids.max`` caps the sandbox's processes, or None if none can be made.

    RLIMIT_NPROC does not bind root, so when grading as root this is the process cap.
    """
    max_processes = _checks.integer(max_processes, "max_processes", ge=1)
    for base in _own_cgroup_dirs():
        group = base / f"course_sandbox_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            (group / "pids.max").write_text(str(max_processes))
            return group
        except OSError:
            group.rmdir()
    return None


def remove_cgroup(group: Path | None) -> None:
    """Remove a cgroup made by :func:`make_pids_cgroup` (None: nothing to do)."""
    if group is None:
        return
    for _ in range(50):  # the sandbox's processes may take a moment to be reaped
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def process_cap() -> str:
    """How the process cap is enforced here: "cgroup", "rlimit", or "none" (root without cgroups)."""
    group = make_pids_cgroup(64)
    if group is not None:
        remove_cgroup(group)
        return "cgroup"
    return "rlimit" if os.getuid() != 0 else "none"


def sandbox_env() -> dict[str, str]:
    """The whole environment of sandboxed processes: nothing of the grader's leaks in."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
            "HOME": "/tmp", "TMPDIR": "/tmp", "JUPYTER_RUNTIME_DIR": "/tmp/jupyter",
            "IPYTHONDIR": "/tmp/ipython", "MPLCONFIGDIR": "/tmp/matplotlib", "MPLBACKEND": "Agg",
            "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
            # as nbgrader sets it while autograding: notebooks may skip slow cells on it (nbgrader's FAQ)
            "NBGRADER_EXECUTION": "autograde"}


def process_limits(limits: Limits, extra: int = 0):
    """(cgroup or None, RLIMIT_NPROC or None) capping a sandbox at ``limits.max_processes + extra``."""
    cgroup = make_pids_cgroup(limits.max_processes + extra)
    # RLIMIT_NPROC counts all of this user's processes: allow the ones already running
    nproc = None if cgroup is not None or os.getuid() == 0 else _user_process_count() + limits.max_processes + extra
    return cgroup, nproc


def fill_box(box: Path, nb: NotebookNode, files: Path | None) -> None:
    """What a sandbox is made from: ``box/work``, a copy of the student's other files (no
    notebooks); ``box/submission.ipynb``, the notebook to run (with the hidden tests); and the
    empty ``box/submission.ipynb.out`` and ``box/exec.log`` that the sandbox writes."""
    work = box / "work"
    work.mkdir()
    if files is not None:
        copy_regular_files(files, work, notebooks=False)
    nbformat.write(nb, box / SUBMISSION)
    for name in (RESULT, LOG):
        (box / name).touch()


def read_log(path: Path) -> str:
    """The first MiB of a sandbox's log (student code can write to it)."""
    if not path.is_file() or path.is_symlink():
        return ""
    with open(path, "rb") as f:
        return f.read(1 << 20).decode(errors="replace")


def read_back(box: Path, limits: Limits, log: str) -> tuple[NotebookNode | None, str | None]:
    """The executed notebook the sandbox left in ``box`` (untrusted: checked before use)."""
    out = box / RESULT
    if out.is_symlink() or not out.is_file() or out.stat().st_size == 0:
        if STAGING_FULL in log:
            return None, f"the submission's files do not fit in its {limits.scratch_bytes // 2**20} MiB working folder"
        detail = "memory limit" if "MemoryError" in log else "the executor failed"
        return None, f"the notebook could not be executed ({detail})"
    if out.stat().st_size >= limits.max_file_bytes:
        return None, f"output too large (over {limits.max_file_bytes // 2**20} MiB)"
    try:
        return nbformat.read(out, as_version=4), None
    except Exception:  # a half-written or tampered file
        return None, "the executed notebook came back unreadable"


def wall_time_reason(limits: Limits) -> str:
    """The reason given when a submission runs past ``limits.wall_timeout``."""
    return f"the whole submission ran longer than {limits.wall_timeout} s and was stopped"


def execute_notebook(nb: NotebookNode, files: Path | None, limits: Limits = Limits(), *,
                     unsafe: bool = False) -> tuple[NotebookNode | None, str | None]:
    """Execute ``nb`` in a sandbox of its own next to a copy of the student's other files.

    Args:
        nb: the (already sanitized) notebook to run.
        files: the student's folder whose regular files are copied next to the notebook.
        limits: resource caps.
        unsafe: run without bubblewrap (resource limits only).

    Returns:
        ``(executed notebook, None)``, or ``(None, reason)`` when nothing usable came back
        (wall time exceeded, output too large, the executor itself failed).
    """
    unsafe = _checks.flag(unsafe, "unsafe")
    with tempfile.TemporaryDirectory(prefix="course_sandbox_") as tmp:
        box = Path(tmp)
        fill_box(box, nb, files)
        work = box / "work"
        with open(box / SUBMISSION, "rb") as notebook, open(box / LOG, "wb") as log:
            executor = [sys.executable, "-m", "course_lib.grading.sandbox.execute"]
            limit_args = [str(limits.cell_timeout), str(limits.max_output_chars), str(limits.memory_bytes)]
            if unsafe:  # same executor and limits, no namespaces: paths are the real ones
                shutil.copyfile(box / SUBMISSION, work / SUBMISSION)
                cmd = executor + [str(work / SUBMISSION), str(box / RESULT), *limit_args]
                cwd, fds = work, ()
            else:  # --stage: the executor copies the student's files into the in-memory /sandbox/work
                cmd = _bwrap_command(box, limits, notebook.fileno()) + executor + [
                    "--stage", "/sandbox/input", SUBMISSION, f"/sandbox/{RESULT}", *limit_args]
                cwd, fds = None, (notebook.fileno(),)
            cgroup, nproc = process_limits(limits)
            try:
                # the log is a file (at most RLIMIT_FSIZE), not a pipe: student code can write to it
                subprocess.run(cmd, cwd=cwd, env=sandbox_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               pass_fds=fds, timeout=limits.wall_timeout, start_new_session=True,
                               preexec_fn=limit_resources(limits, nproc, cgroup))
            except subprocess.TimeoutExpired:
                return None, wall_time_reason(limits)
            finally:
                remove_cgroup(cgroup)
        return read_back(box, limits, read_log(box / LOG))


def notebook_imports(paths: list[Path]) -> list[str]:
    """The modules the code cells of these notebooks import (``import a.b`` gives ``a.b``),
    in first-seen order; cells that are not plain Python (magics) are read line by line."""
    modules: list[str] = []
    for path in paths:
        try:
            cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        except Exception:  # not a notebook: nothing to preload from it
            continue
        for cell in cells:
            lines = [line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))]
            try:
                tree = ast.parse("\n".join(lines))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                modules += [n for n in names if n not in modules]
    return modules

