"""The grading zygote (:class:`course_lib.grading.sandbox.Zygote`): one pre-imported Python per worker
that forks an isolated child per submission. What must hold: a child gets exactly what a
sandbox of its own gives (same outputs, same limits), nothing a submission does reaches
the zygote or a later submission, and the grader falls back to one sandbox per submission
where the zygote cannot run."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import sandbox, worker as autograde_worker
from nbgrader_helpers import cell, notebook

pytestmark = pytest.mark.grading

BWRAP_PROBLEM = sandbox.bwrap_problem()
LIMITS = sandbox.Limits(cell_timeout=5, wall_timeout=60, memory_bytes=2**30, max_processes=40)


@pytest.fixture(scope="module")
def zygote():
    if BWRAP_PROBLEM is not None:
        pytest.skip(f"no sandbox here: {BWRAP_PROBLEM}")
    z = sandbox.Zygote(LIMITS, ("numpy", "torch"))
    yield z
    z.close()


def _texts(nb: nbformat.NotebookNode) -> list[str]:
    """Each code cell's stream text and error names, in order."""
    result = []
    for c in nb.cells:
        parts = [o.get("text", "") for o in c.get("outputs", []) if o.get("output_type") == "stream"]
        parts += [f"<{o['ename']}>" for o in c.get("outputs", []) if o.get("output_type") == "error"]
        result.append("".join(parts))
    return result


def _last_json(nb: nbformat.NotebookNode) -> dict:
    return json.loads(_texts(nb)[-1].strip().splitlines()[-1])


PLANTER = textwrap.dedent("""\
    import glob, json, os, signal, subprocess
    report = {"uid": os.getuid()}
    open("/tmp/planted", "w").write("from the last student")
    if os.path.isdir("/dev/shm"):
        open("/dev/shm/planted", "w").write("from the last student")
    open("/sandbox/planted", "w").write("from the last student")
    # a daemon meant to outlive this submission
    subprocess.Popen(["sleep", "300"], start_new_session=True, stdout=subprocess.DEVNULL)
    # every process outside this submission's PID namespace that /proc shows (the zygote, and the
    # child that waits for this namespace's PID 1): try to read and write its memory, root, environment
    reached, outside = [], 0
    for d in glob.glob("/proc/[0-9]*"):
        try:
            nspid = [l for l in open(d + "/status") if l.startswith("NSpid:")][0].split()[1:]
        except (OSError, IndexError):
            continue
        if len(nspid) != 1:
            continue  # in this submission's namespace: its own processes
        outside += 1
        for what, action in (("mem", lambda: open(d + "/mem", "r+b")), ("root", lambda: os.listdir(d + "/root")),
                             ("environ", lambda: open(d + "/environ").read())):
            try:
                action()
                reached.append((d, what))
            except OSError:
                pass
    report["reached"], report["outside"] = reached, outside
    caps = {l.split(":")[0]: l.split(":")[1].strip() for l in open("/proc/self/status") if l.startswith(("Cap", "NoNew"))}
    report["caps"] = caps
    report["boxes"] = os.listdir("/boxes") if os.path.isdir("/boxes") else None
    print(json.dumps(report))
""")
# signal everything this submission may signal (kill(-1) spares only the caller and PID 1), and PID 1
KILLER = "import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nos.kill(1, signal.SIGSTOP)"

INSPECTOR = textwrap.dedent("""\
    import glob, json, os
    procs = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            procs.append(open(d + "/cmdline").read())
        except OSError:
            pass
    print(json.dumps({"tmp": sorted(os.listdir("/tmp")), "shm": sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else [],
                      "sandbox": sorted(os.listdir("/sandbox")), "work": sorted(os.listdir(".")),
                      "sleepers": [p for p in procs if p.startswith("sleep")], "square": 7 * 7}))
""")


def test_nothing_a_submission_does_reaches_the_zygote_or_the_next_one(zygote, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "data.txt").write_text("the student's own file")
    first, reason = zygote.execute(notebook(cell(PLANTER), cell(KILLER)), files)
    assert reason is None
    report = json.loads(_texts(first)[0].strip().splitlines()[-1])
    assert report["outside"] >= 2 and report["reached"] == []  # the zygote's memory, root, environment
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(report["caps"][name], 16) == 0, report["caps"]
    assert report["caps"]["NoNewPrivs"] == "1"
    assert report["boxes"] == []  # other boxes hidden
    assert zygote.alive()
    for _ in range(2):  # the next submissions of the same zygote start clean
        later, reason = zygote.execute(notebook(cell(INSPECTOR)), files)
        assert reason is None
        seen = _last_json(later)
        assert "planted" not in seen["tmp"] and "planted" not in seen["shm"] and "planted" not in seen["sandbox"]
        assert seen["sleepers"] == []
        assert seen["work"] == ["data.txt"]  # its own files (the notebook itself was deleted)
        assert seen["square"] == 49


CASES = {
    "prints": ("print('hello'); import torch; print(torch.arange(4).sum().item())", None),
    "error": ("raise ValueError('no')", None),
    "timeout": ("while True:\n    pass", None),
    "memory": ("hoard = bytearray(4 * 2**30)", None),
    "sys_exit": ("import sys; sys.exit()", None),
    "os_exit": ("import os; os._exit(0)", None),
    "segfault": ("import ctypes; ctypes.string_at(0)", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_forked_child_runs_a_notebook_as_a_sandbox_of_its_own_does(zygote, name):
    source, _ = CASES[name]
    nb = notebook(cell("x = 1"), cell(source), cell("print('after', x)"))
    forked, reason_forked = zygote.execute(nb, None)
    alone, reason_alone = sandbox.execute_notebook(nb, None, LIMITS)
    assert reason_forked == reason_alone
    assert _texts(forked) == _texts(alone)
    assert zygote.alive()


def test_notebooks_see_nbgrader_execution_autograde_in_every_mode(zygote):
    # nbgrader sets NBGRADER_EXECUTION=autograde while autograding (its FAQ: skip slow cells on it)
    nb = notebook(cell("import os; print(os.environ.get('NBGRADER_EXECUTION'))"))
    forked, _ = zygote.execute(nb, None)
    alone, _ = sandbox.execute_notebook(nb, None, LIMITS)
    unsafe, _ = sandbox.execute_notebook(nb, None, LIMITS, unsafe=True)
    assert _texts(forked) == _texts(alone) == _texts(unsafe) == ["autograde\n"]


def test_the_wall_time_cap_holds_and_the_zygote_goes_on(tmp_path):
    if BWRAP_PROBLEM is not None:
        pytest.skip(f"no sandbox here: {BWRAP_PROBLEM}")
    limits = sandbox.Limits(cell_timeout=10, wall_timeout=5)
    with sandbox.Zygote(limits, ()) as z:
        slow = notebook(*[cell("import subprocess, time\nsubprocess.Popen(['sleep', '300'])\ntime.sleep(2)")
                          for _ in range(5)])
        executed, reason = z.execute(slow, None)
        assert executed is None and reason == "the whole submission ran longer than 5 s and was stopped"
        after, reason = z.execute(notebook(cell(INSPECTOR)), None)
        assert reason is None and _last_json(after)["sleepers"] == []


def test_the_process_cap_holds_in_a_forked_child():
    if BWRAP_PROBLEM is not None:
        pytest.skip(f"no sandbox here: {BWRAP_PROBLEM}")
    if sandbox.process_cap() == "none":
        pytest.skip("root without a writable pids cgroup: no process cap can be enforced here")
    nb = notebook(cell("import subprocess\nprocs = []\ntry:\n    for _ in range(200):\n"
                       "        procs.append(subprocess.Popen(['sleep', '30']))\nexcept OSError:\n    pass\n"
                       "print(len(procs))"))
    with sandbox.Zygote(sandbox.Limits(max_processes=40, cell_timeout=20), ()) as z:
        for _ in range(2):  # the first child's processes are gone before the second starts
            executed, reason = z.execute(nb, None)
            assert reason is None
            assert 10 < int(executed.cells[0].outputs[0]["text"]) < 40


def test_notebook_imports_lists_the_modules_in_order(tmp_path):
    nb = notebook(cell("%matplotlib inline\nimport torch, numpy as np\nfrom course_lib import data"),
                  cell("!ls\nfrom . import local\nimport torch.nn.functional as F"),
                  cell("def f(:\n    broken"), cell("text", kind="markdown"))
    nbformat.write(nb, tmp_path / "a.ipynb")
    (tmp_path / "b.ipynb").write_text("not a notebook")
    nbformat.write(notebook(cell("import scipy.stats")), tmp_path / "c.ipynb")
    paths = [tmp_path / "a.ipynb", tmp_path / "b.ipynb", tmp_path / "c.ipynb"]
    assert sandbox.notebook_imports(paths) == ["torch", "numpy", "course_lib", "torch.nn.functional", "scipy.stats"]


def test_the_worker_falls_back_to_a_sandbox_per_submission(monkeypatch):
    """Where the zygote cannot isolate a child (nested namespaces refused), every submission
    still runs, each in a sandbox of its own, and the zygote is not tried again."""
    starts, calls = [], []

    def refused(limits, preload):
        starts.append(preload)
        raise sandbox.ZygoteError("nested user namespaces refused", permanent=True)

    monkeypatch.setattr(sandbox, "Zygote", refused)
    monkeypatch.setattr(sandbox, "execute_notebook", lambda nb, files, limits: calls.append(nb) or (nb, None))
    monkeypatch.setattr(autograde_worker._Zygotes, "zygote", None)
    monkeypatch.setattr(autograde_worker._Zygotes, "unusable", None)
    nb = notebook(cell("1"))
    for _ in range(3):
        assert autograde_worker._Zygotes.execute(nb, Path("."), LIMITS, ["torch"]) == (nb, None)
    assert len(starts) == 1 and len(calls) == 3
    assert "refused" in autograde_worker._Zygotes.unusable


FRESH_TMP = textwrap.dedent("""\
    import json, os, sys
    from course_lib.grading.sandbox import namespaces as ns
    open("/tmp/planted", "w").write("x")
    pid = os.fork()
    if pid == 0:
        ns.enter_new_namespaces()
        ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
        ns.mount_fresh_tmpfs("/tmp", 2**20)
        ns.drop_all_capabilities()
        try:
            open("/tmp/project/lib/pwned.txt", "w").write("pwned")
            writable = True
        except OSError:
            writable = False
        print(json.dumps({"tmp": sorted(os.listdir("/tmp")), "lib": sorted(os.listdir("/tmp/project/lib")),
                          "file": open("/tmp/project/notes.txt").read(), "writable": writable}), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
""")


def test_a_fresh_tmp_keeps_the_read_only_binds_below_it(tmp_path):
    """A project checked out under /tmp (as CI does) is bound into the sandbox below /tmp: the
    child's fresh /tmp must bind it back, read-only, and drop everything else."""
    if BWRAP_PROBLEM is not None:
        pytest.skip(f"no sandbox here: {BWRAP_PROBLEM}")
    import subprocess
    import sys

    (tmp_path / "notes.txt").write_text("kept")
    lib = Path(sandbox.__file__).parent  # the sandbox package
    cmd = sandbox.bwrap.bwrap_base() + ["--unshare-user", "--uid", "65534", "--gid", "65534",
                                   "--ro-bind", str(lib), "/tmp/project/lib",
                                   "--ro-bind", str(tmp_path / "notes.txt"), "/tmp/project/notes.txt",
                                   "--remount-ro", "/", sys.executable, "-c", FRESH_TMP]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=sandbox.bwrap.sandbox_env())
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "planted" not in seen["tmp"] and "project" in seen["tmp"]
    assert "zygote.py" in seen["lib"] and seen["file"] == "kept"
    assert seen["writable"] is False and not (lib / "pwned.txt").exists()


FILLER = textwrap.dedent("""\
    import json, os
    visible = {}  # mount point -> (options, type) of the top-most mount there
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        visible[fields[4]] = (fields[5].split(","), fields[fields.index("-") + 1])
    writable = sorted([point, kind] for point, (options, kind) in visible.items() if "rw" in options)

    def fill(folder):  # 1 MiB at a time until the folder is full; (bytes written, errno)
        written = 0
        try:
            for i in range(64):
                with open(os.path.join(folder, f"fill{i}"), "wb") as f:
                    for _ in range(4):
                        f.write(bytes(2**20))
                        f.flush()
                        written += 2**20
        except OSError as error:
            return written, error.errno
        return written, None

    print(json.dumps({"writable": writable, "fill": {p: fill(p) for p in ["/tmp", "/dev/shm", ".", "/sandbox", "/dev"]}}))
""")


@pytest.mark.parametrize("forked", [True, False], ids=["zygote", "alone"])
def test_a_submission_can_write_only_capped_memory_and_its_two_result_files(forked):
    """/sandbox (the working folder in it), /tmp and /dev/shm are in-memory folders of at most
    scratch_bytes each; /dev takes no new files; of the grader's disk only the result notebook
    and the log are writable (each capped by RLIMIT_FSIZE). Without the caps, one submission
    could fill the grader's memory or disk and fail every submission graded after it."""
    if BWRAP_PROBLEM is not None:
        pytest.skip(f"no sandbox here: {BWRAP_PROBLEM}")
    if not forked and not sandbox.bwrap_caps_tmpfs():
        pytest.skip("this bwrap is older than 0.7 and cannot cap a tmpfs (--size)")
    cap = 8 * 2**20
    limits = sandbox.Limits(cell_timeout=30, wall_timeout=60, scratch_bytes=cap)
    nb = notebook(cell("open('mine.txt', 'w').write('a student file')"), cell(FILLER))
    if forked:
        with sandbox.Zygote(limits, ()) as z:
            executed, reason = z.execute(nb, None)
    else:
        executed, reason = sandbox.execute_notebook(nb, None, limits)
    assert reason is None
    seen = _last_json(executed)
    enospc, erofs = 28, 30
    for folder in ("/tmp", "/dev/shm", "."):
        written, error = seen["fill"][folder]
        assert error == enospc and cap - 2**20 * 4 <= written <= cap, (folder, written, error)
    assert seen["fill"]["/sandbox"] == [0, enospc]  # the working folder's tmpfs, already full
    assert seen["fill"]["/dev"] == [0, erofs]
    disk = {point for point, kind in seen["writable"] if kind not in ("tmpfs", "proc", "devtmpfs", "devpts")}
    assert disk <= {"/sandbox/submission.ipynb.out", "/sandbox/exec.log"}, seen["writable"]
    assert {point for point, kind in seen["writable"] if kind == "tmpfs"} == {"/tmp", "/dev/shm", "/sandbox"}


@pytest.mark.parametrize("forked", [True, False], ids=["zygote", "alone"])
def test_files_that_do_not_fit_the_working_folder_are_reported_as_such(forked, tmp_path):
    """The student's other files are copied into the capped working folder; the ones that fit
    arrive intact, and files larger than the cap make a clear reason, not a crash."""
    if BWRAP_PROBLEM is not None:
        pytest.skip(f"no sandbox here: {BWRAP_PROBLEM}")
    if not forked and not sandbox.bwrap_caps_tmpfs():
        pytest.skip("this bwrap is older than 0.7 and cannot cap a tmpfs (--size)")
    limits = sandbox.Limits(cell_timeout=30, wall_timeout=60, scratch_bytes=4 * 2**20)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "small.txt").write_text("kept")
    nb = notebook(cell("import os\nprint(open('data/small.txt').read(), sorted(os.listdir('.')))"))

    def run():
        if forked:
            with sandbox.Zygote(limits, ()) as z:
                return z.execute(nb, tmp_path)
        return sandbox.execute_notebook(nb, tmp_path, limits)

    executed, reason = run()
    assert reason is None and _texts(executed) == ["kept ['data']\n"]
    (tmp_path / "big.bin").write_bytes(bytes(5 * 2**20))
    assert run() == (None, "the submission's files do not fit in its 4 MiB working folder")
