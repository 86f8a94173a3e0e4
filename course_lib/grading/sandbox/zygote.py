"""The grading zygote: a pre-imported Python that forks one isolated child per submission.

Usage (inside bubblewrap, started by :class:`course_lib.grading.sandbox.Zygote`):
``python -m course_lib.grading.sandbox.zygote LIMITS_JSON PRELOAD_JSON``, then one request per
line on stdin, ``{"box": NAME}``, answered by one JSON line on stdout,
``{"status": "done" | "timeout", "code": EXIT_CODE}``.

Starting Python, importing PyTorch and the Jupyter stack costs a few seconds per
submission, about as long as an assignment's cells take to run. The zygote pays it once:
it imports them, then for each submission forks a child that

1. gets new user, mount, PID, IPC, network and UTS namespaces
   (:func:`course_lib.grading.sandbox.namespaces.enter_new_namespaces`); its own child is PID 1
   there, so nothing it starts can signal the zygote or outlive the submission (PID 1
   is killed when the wall time is up, and the namespace dies with it);
2. mounts an in-memory ``/sandbox`` of at most ``scratch_bytes``, copies the submission's
   files from its box (``/boxes/NAME``) into ``/sandbox/work``, binds only the box's log and
   result file back, hides all the boxes, and mounts a fresh, capped ``/tmp`` and ``/dev/shm``;
3. closes every file descriptor it inherited, drops all capabilities and sets
   no_new_privs, and only then executes the notebook with :mod:`course_lib.grading.sandbox.execute`,
   whose kernel is forked, not started anew.

The zygote is not dumpable (``PR_SET_DUMPABLE`` 0): a child's student code runs as the
same user but cannot read or write the zygote's memory through ``/proc``. Everything the
bubblewrap sandbox around the zygote enforces (read-only system, no network, no
project files, resource limits) holds for every child too.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import resource
import select
import signal
import sys
import tempfile
import uuid

from jupyter_client.provisioning import KernelProvisionerBase

from course_lib.grading.sandbox import execute as sandbox_exec
from course_lib.grading.sandbox import namespaces as ns
from course_lib.grading.sandbox.execute import LOG, RESULT, SUBMISSION

BOX_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
JUPYTER_PRELOAD = ("ipykernel.kernelapp", "ipykernel.ipkernel", "jupyter_client.manager", "nbclient", "nbformat",
                   "course_lib.grading.sandbox.execute")


class ForkedKernelProvisioner(KernelProvisionerBase):
    """A jupyter_client provisioner for a kernel that is already running as a forked child."""

    def __init__(self, pid: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pid = pid
        self.returncode: int | None = None

    @property
    def has_process(self) -> bool:
        return self.pid is not None

    async def poll(self) -> int | None:
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
            else:
                if done:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    async def wait(self) -> int | None:
        while await self.poll() is None:
            await asyncio.sleep(0.05)
        return self.returncode

    async def send_signal(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)  # the kernel and what it started, as jupyter_client does
        except OSError:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    async def kill(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    async def launch_kernel(self, cmd: list[str], **kwargs):
        return self.connection_info  # already running

    async def cleanup(self, restart: bool = False) -> None:
        return None


def forked_kernel(memory_bytes: int, cwd: str):
    """Fork an IPython kernel from this process (its imports come along) under the memory cap;
    return an ``AsyncKernelManager`` that nbclient can use as its own. Call it before any
    event loop runs in this process."""
    from jupyter_client.connect import write_connection_file
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    runtime = tempfile.mkdtemp(prefix="kernel_")
    fname, _ = write_connection_file(os.path.join(runtime, "kernel.json"), transport="ipc",
                                     ip=os.path.join(runtime, "ipc"), key=uuid.uuid4().hex.encode())
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            os.chdir(cwd)
            resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
            from ipykernel.kernelapp import IPKernelApp

            sys.argv = ["ipykernel_launcher", "-f", fname]
            IPKernelApp.launch_instance(argv=["-f", fname, "--HistoryManager.hist_file=:memory:"])
        finally:
            os._exit(0)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the kernel did it first
    km = AsyncKernelManager(transport="ipc", connection_file=fname, kernel_name="python3")
    km.load_connection_file(fname)
    km._kernel_spec = KernelSpec(argv=[], display_name="Python 3 (grading sandbox)", language="python",
                                 interrupt_mode="signal")
    km.provisioner = ForkedKernelProvisioner(pid, parent=km, kernel_id=str(uuid.uuid4()),
                                             kernel_spec=km._kernel_spec,
                                             connection_info=km.get_connection_info())
    return km


def _submission(name: str, limits: dict) -> None:
    """PID 1 of the submission's namespaces: private mounts, no capabilities, then the notebook."""
    ns.prctl(ns.PR_SET_PDEATHSIG, signal.SIGKILL)
    ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
    box, size = f"/boxes/{name}", limits["scratch_bytes"]
    # the writable /sandbox is in memory and capped; of the box on the grader's disk only the
    # log and the result file are bound in, so nothing else there can be written or grow
    ns.mount("tmpfs", "/sandbox", "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, f"size={size},mode=0755")
    for result in (LOG, RESULT):
        os.close(os.open(f"/sandbox/{result}", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        ns.mount(f"{box}/{result}", f"/sandbox/{result}", None, ns.MS_BIND)
    log = os.open(f"/sandbox/{LOG}", os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.mkdir("/sandbox/work")
    sandbox_exec.stage(f"{box}/work", "/sandbox/work")
    sandbox_exec.stage_file(f"{box}/{SUBMISSION}", f"/sandbox/work/{SUBMISSION}")
    ns.mount("tmpfs", "/boxes", "tmpfs", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_RDONLY, "size=4k,mode=0555")
    ns.mount_fresh_tmpfs("/tmp", size)  # keeps the read-only binds of a project that lives in /tmp
    if os.path.isdir("/dev/shm"):
        ns.mount_fresh_tmpfs("/dev/shm", size)
    ns.drop_all_capabilities()
    ns.prctl(ns.PR_SET_DUMPABLE, 1)  # an ordinary process again: the zygote is out of reach
    os.chdir("/sandbox/work")
    km = forked_kernel(limits["memory_bytes"], "/sandbox/work")
    sandbox_exec.run(SUBMISSION, f"/sandbox/{RESULT}", limits["cell_timeout"],
                     limits["max_output_chars"], limits["memory_bytes"], km=km)


def _child(name: str, report: int, limits: dict) -> None:
    """The zygote's child: new namespaces, then PID 1 runs the submission; reports PID 1's pid."""
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, report)  # the zygote's pipes to the grader among them
    os.closerange(report + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    ns.enter_new_namespaces()
    init = os.fork()
    if init == 0:
        code = 1
        try:
            os.close(report)
            _submission(name, limits)
            code = 0
        except BaseException as error:  # noqa: BLE001: the reason goes to exec.log
            print(f"sandbox child failed: {error!r}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    os.write(report, f"{init}\n".encode())
    os.close(report)
    _, status = os.waitpid(init, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _reap() -> None:
    """Collect exited children (the zygote is PID 1 of its sandbox: orphans come to it)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_one(name: str, limits: dict) -> dict:
    """Fork, run the submission in box ``name`` and wait at most the wall time for it."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            _child(name, write_end, limits)
        except BaseException as error:  # noqa: BLE001: told to the grader, which falls back
            os.write(write_end, f"error {error!r}"[:500].encode(errors="replace"))
        finally:
            os._exit(70)
    os.close(write_end)
    pidfd = os.pidfd_open(child)
    try:
        init, text = None, ""
        if select.select([read_end], [], [], 60)[0]:
            text = os.read(read_end, 512).decode(errors="replace").strip()
            init = int(text) if text.isdigit() else None
        if init is None:  # the child could not set up its namespaces
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            return {"status": "error", "code": -1, "why": text or "no namespaces"}
        status = "done"
        if not select.select([pidfd], [], [], limits["wall_timeout"])[0]:
            status = "timeout"
            for pid in (init, child):
                try:
                    os.kill(pid, signal.SIGKILL)  # PID 1 first: its whole namespace goes with it
                except ProcessLookupError:
                    pass
        _, wait_status = os.waitpid(child, 0)
        return {"status": status, "code": os.waitstatus_to_exitcode(wait_status)}
    finally:
        os.close(read_end)
        os.close(pidfd)
        _reap()


def serve(limits: dict, preload: list[str]) -> None:
    """Import ``preload``, say ready, then answer one request per line of stdin."""
    ns.prctl(ns.PR_SET_DUMPABLE, 0)
    loaded = []
    for module in [*preload, *JUPYTER_PRELOAD]:
        try:
            importlib.import_module(module)
            loaded.append(module)
        except Exception:  # noqa: BLE001: a module that cannot load is imported by the notebook itself
            pass
    out = sys.stdout
    out.write(json.dumps({"ready": True, "preloaded": loaded}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            name = request["box"]
        except (ValueError, KeyError, TypeError):
            out.write(json.dumps({"status": "error", "code": -1, "why": "bad request"}) + "\n")
            out.flush()
            continue
        if not isinstance(name, str) or not BOX_NAME.match(name):
            reply = {"status": "error", "code": -1, "why": "bad box name"}
        else:
            reply = run_one(name, limits)
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]), json.loads(sys.argv[2]))
