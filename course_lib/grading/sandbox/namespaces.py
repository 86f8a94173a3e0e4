"""Linux namespaces, mounts and capabilities for the grading zygote's children (libc via ctypes).

The grading zygote (:mod:`course_lib.grading.sandbox.zygote`) lives inside one bubblewrap sandbox
and forks a child per submission. Each child calls :func:`enter_new_namespaces` to get a
user, mount, PID, IPC, network and UTS namespace of its own, mounts a fresh ``/tmp`` and
``/dev/shm`` and its own submission folder, and then :func:`drop_all_capabilities`
before any student code runs. Python 3.11 has no ``os.unshare``, hence ctypes.
"""

from __future__ import annotations

import ctypes
import os
import re
import stat

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def prctl(option: int, arg: int = 0) -> None:
    """``prctl(option, arg, 0, 0, 0)``, raising OSError on failure."""
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           f"prctl({option})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """The ``mount(2)`` system call."""
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
           f"mount {target}")


def submounts(path: str) -> list[str]:
    """The top-most mount points strictly below ``path``, from ``/proc/self/mountinfo``."""
    prefix = path.rstrip("/") + "/"
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point.startswith(prefix):
                points.add(point)
    return sorted(p for p in points if not any(p.startswith(q + "/") for q in points))


def mount_fresh_tmpfs(path: str, size_bytes: int) -> None:
    """Cover ``path`` with a new, empty tmpfs of at most ``size_bytes`` (in memory: without a
    cap, files written there could take all of the machine's RAM). Mounts below it (the read-only binds of a
    project or virtual environment that lives under /tmp) are bound back where they were,
    read-only still: a bind copies the mount's flags, and in a new user namespace they are
    locked."""
    kept = [(point, os.open(point, os.O_PATH | os.O_NOFOLLOW)) for point in submounts(path)]
    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_bytes},mode=1777")
    for point, fd in kept:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.makedirs(point, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(point), exist_ok=True)
            open(point, "a").close()
        mount(f"/proc/self/fd/{fd}", point, None, MS_BIND | MS_REC)
        os.close(fd)


def enter_new_namespaces() -> None:
    """Move the calling (single-threaded) process into new user, mount, IPC, network and UTS
    namespaces; its next child is PID 1 of a new PID namespace. The user's id maps to itself,
    so files keep their owner."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWUTS
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")
    # a non-dumpable process's /proc/self files belong to root, so a non-root grader could not
    # write its maps (EACCES; tried): dumpable just for the maps
    dumpable = _libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    prctl(PR_SET_DUMPABLE, 1)
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    finally:
        prctl(PR_SET_DUMPABLE, dumpable)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capabilities() -> dict[str, int]:
    """This process's capability sets from ``/proc/self/status``: CapInh, CapPrm, CapEff, CapBnd, CapAmb."""
    sets = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Cap"):
                key, value = line.split(":", 1)
                sets[key] = int(value.strip(), 16)
    return sets


def drop_all_capabilities() -> None:
    """Empty every capability set (bounding and ambient included) and set no_new_privs, so
    that neither this process nor anything it runs can gain one back; verified afterwards."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    left = {k: v for k, v in capabilities().items() if v}
    if left:
        raise OSError(f"capabilities left after dropping them all: {left}")
