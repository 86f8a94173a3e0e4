"""The pool of grading workers: ``JOBS`` processes of :mod:`course_lib.grading.worker`, each
grading one student at a time, fed from one queue.

A worker that dies takes only the student it was grading with it: that student is reported
as failed (``"the grading worker crashed"``) and a new worker process takes over the queue.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from course_lib.grading.release import venv_environment
from course_lib.grading.sandbox import Limits

CRASHED = "the grading worker crashed"


def _start_worker(course: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "course_lib.grading.worker", *args],
                            cwd=course, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=venv_environment())


def _ask(proc: subprocess.Popen, student: str) -> dict | None:
    """Send ``student`` to the worker and read its result line; None if it died first."""
    try:
        proc.stdin.write(student + "\n")
        proc.stdin.flush()
        for line in proc.stdout:
            try:
                candidate = json.loads(line)
            except json.JSONDecodeError:
                continue  # not a result line
            if isinstance(candidate, dict) and candidate.get("student") == student:
                return candidate
    except (BrokenPipeError, OSError):
        pass
    return None


def worker_results(course: Path, assignment: str, limits: Limits, unsafe: bool,
                   students: list[str], jobs: int, zygote: bool = True) -> Iterator[dict]:
    """Grade ``students`` with ``jobs`` worker processes; yield each result as it comes,
    ``{"student", "success", "feedback", "log"}`` (the worker's JSON line)."""
    todo: queue.Queue = queue.Queue()
    for s in students:
        todo.put(s)
    done: queue.Queue = queue.Queue()
    args = [str(course), assignment, json.dumps(limits.__dict__), "1" if unsafe else "0", "1" if zygote else "0"]

    def drive() -> None:
        proc = None
        try:
            while True:
                try:
                    student = todo.get_nowait()
                except queue.Empty:
                    return
                if proc is None or proc.poll() is not None:
                    proc = _start_worker(course, args)
                result = _ask(proc, student)
                if result is None:
                    proc.kill()
                    proc = None
                    result = {"student": student, "success": False, "feedback": False, "log": CRASHED}
                done.put(result)
        finally:
            if proc is not None:
                proc.stdin.close()
                proc.wait()

    threads = [threading.Thread(target=drive, daemon=True) for _ in range(max(1, min(jobs, len(students))))]
    for t in threads:
        t.start()
    for _ in students:
        yield done.get()
    for t in threads:
        t.join()
