"""The grader's side of the zygote: :class:`Zygote` starts one long-lived bubblewrap sandbox
around a pre-imported Python (:mod:`course_lib.grading.sandbox.zygote`, the side inside) and
asks it for one forked, isolated child per submission.

It builds on :mod:`course_lib.grading.sandbox.bwrap`: the same read-only system, resource
limits, boxes and result checks as a sandbox of its own per submission
(:func:`~course_lib.grading.sandbox.bwrap.execute_notebook`). Both names are importable from
``bwrap`` and from :mod:`course_lib.grading.sandbox` too.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nbformat import NotebookNode

from course_lib.grading.sandbox.bwrap import (Limits, bwrap_base, bwrap_problem, fill_box, limit_resources,
                                              process_limits, read_back, read_log, remove_cgroup, sandbox_env,
                                              wall_time_reason)
from course_lib.grading.sandbox.execute import LOG

__all__ = ["Zygote", "ZygoteError"]


class ZygoteError(RuntimeError):
    """The zygote could not start or stopped answering. ``permanent``: it cannot work on this
    machine at all (no bwrap, or nested namespaces refused), so there is no point retrying."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Zygote:
    """One long-lived sandbox whose pre-imported Python forks a fresh, isolated child for each
    submission (:mod:`course_lib.grading.sandbox.zygote`): the same isolation and limits as a sandbox
    of its own per submission, without paying Python's, PyTorch's and Jupyter's start-up
    (a few seconds) every time. One per grading worker; submissions run one at a time.

    What the children share with each other is only what the zygote's own sandbox shows
    them read-only; each gets new namespaces, an empty ``/tmp`` and ``/dev/shm``, only its
    own box, no capabilities, and nothing survives it (its PID 1 is killed at the end).

    Args:
        limits: resource caps for every submission.
        preload: modules to import once in the zygote (those the notebooks import).
    """

    START_TIMEOUT = 180  # seconds to import the preloaded modules

    def __init__(self, limits: Limits = Limits(), preload: tuple[str, ...] = ("numpy", "torch")) -> None:
        problem = bwrap_problem()
        if problem is not None:
            raise ZygoteError(problem, permanent=True)
        self.limits = limits
        self.root = Path(tempfile.mkdtemp(prefix="course_zygote_"))
        self._count = 0
        # the zygote, the child that waits for its PID 1, and PID 1 count with the students' processes
        self._cgroup, nproc = process_limits(limits, extra=3)
        cmd = bwrap_base() + ["--as-pid-1", "--bind", str(self.root), "/boxes", "--dir", "/sandbox",
                               "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/"]
        if os.getuid() == 0:
            # a child may map its own user id into its new user namespace, except root's without
            # CAP_SETFCAP (dropped): graded as root, the zygote runs as nobody in its namespace
            cmd[1:1] = ["--unshare-user", "--uid", "65534", "--gid", "65534"]
        cmd += [sys.executable, "-m", "course_lib.grading.sandbox.zygote",
                json.dumps({k: getattr(limits, k) for k in ("cell_timeout", "wall_timeout", "memory_bytes",
                                                            "max_output_chars", "scratch_bytes")}),
                json.dumps(list(preload))]
        self.process = subprocess.Popen(cmd, env=sandbox_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=limit_resources(limits, nproc, self._cgroup))
        ready = self._reply(self.START_TIMEOUT)
        if not ready.get("ready"):
            self.close()
            raise ZygoteError("the grading zygote did not start", permanent=True)
        self.preloaded: list[str] = ready.get("preloaded", [])

    def _reply(self, timeout: float) -> dict:
        """The zygote's next JSON line, or {} if none came within ``timeout`` seconds."""
        stdout = self.process.stdout
        if not select.select([stdout], [], [], timeout)[0]:
            return {}
        line = stdout.readline()
        try:
            reply = json.loads(line)
        except ValueError:
            return {}
        return reply if isinstance(reply, dict) else {}

    def alive(self) -> bool:
        return self.process.poll() is None

    def execute(self, nb: NotebookNode, files: Path | None) -> tuple[NotebookNode | None, str | None]:
        """Like :func:`execute_notebook`, in a child of the zygote. Raises :class:`ZygoteError`
        (after closing the zygote) when the zygote itself fails; the caller can retry elsewhere."""
        if not self.alive():
            raise ZygoteError("the grading zygote is not running")
        self._count += 1
        name = f"box{self._count}"
        box = self.root / name
        box.mkdir()
        try:
            fill_box(box, nb, files)
            try:
                self.process.stdin.write((json.dumps({"box": name}) + "\n").encode())
                self.process.stdin.flush()
            except OSError as error:
                self.close()
                raise ZygoteError(f"the grading zygote stopped: {error}") from None
            reply = self._reply(self.limits.wall_timeout + 60)
            if reply.get("status") not in ("done", "timeout"):
                self.close()
                if reply.get("status") == "error":  # a child could not make its namespaces
                    raise ZygoteError(f"the grading zygote cannot isolate a child here: {str(reply.get('why'))[:300]}",
                                      permanent=True)
                raise ZygoteError("the grading zygote stopped answering")
            if reply["status"] == "timeout":
                return None, wall_time_reason(self.limits)
            return read_back(box, self.limits, read_log(box / LOG))
        finally:
            shutil.rmtree(box, ignore_errors=True)

    def close(self) -> None:
        """Stop the zygote and everything in its sandbox; remove its boxes."""
        if self.process.poll() is None:
            self.process.kill()  # bwrap's --die-with-parent takes the whole sandbox with it
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        remove_cgroup(self._cgroup)
        self._cgroup = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Zygote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
