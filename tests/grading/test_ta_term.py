"""A TA's term, end to end through the real tools: ``make grade`` a small class, grade a
written answer in Formgrader (a real JupyterLab started by ``make formgrade``, driven through
the HTTP API its web page calls, with the XSRF cookie and header), rerun ``make grade`` in
full and for one student, then ``make feedback`` and ``make export``.

The class: the synthetic ``sq`` assignment of ``nbgrader_helpers`` (``square`` 2 points,
``cube`` 3, the written answer ``why`` 1): alice hands in the model answer (5 autograded + 1
by hand), gina a wrong square (3), bob the untouched release (0)."""

from __future__ import annotations

import csv
import html
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import sandbox
from course_lib.grading.release import REPO, generate_release
from nbgrader_helpers import square_assignment

pytestmark = pytest.mark.grading

ASSIGNMENT = "sq"
TOKEN = "ta-term-test"
COMMENT = "Clear argument; cite the lecture next time."


def _grade(subs: Path, out: Path, source: Path, *extra: str) -> subprocess.CompletedProcess:
    unsafe = ["--unsafe"] if sandbox.bwrap_problem() else []
    done = subprocess.run([sys.executable, "-m", "course_lib.grading", "--submissions", str(subs),
                           "--assignment", ASSIGNMENT, "--out", str(out), "--source", str(source),
                           "--jobs", "2", "--no-progress", *unsafe, *extra],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answer(nb: nbformat.NotebookNode, **answers: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` with the cells of these grade_ids holding these sources."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for c in nb.cells:
        gid = c.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            c.source = answers[gid]
    return nb


MODEL = {"square": "def square(x):\n    return x * x", "cube": "def cube(x):\n    return x ** 3",
         "why": "Because squaring and cubing are powers."}


class Formgrader:
    """A browser's session with Formgrader: logged in by the token once, then cookies only,
    and the XSRF token echoed in a header on every write, as the page's JavaScript does."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.opener.open(f"{base}/formgrader?token={TOKEN}", timeout=30).read()  # login cookie + _xsrf

    def xsrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "_xsrf")

    def get(self, path: str):
        with self.opener.open(f"{self.base}{path}", timeout=30) as r:
            return json.loads(r.read())

    def put(self, path: str, body: dict):
        request = urllib.request.Request(f"{self.base}{path}", data=json.dumps(body).encode(), method="PUT",
                                         headers={"X-XSRFToken": self.xsrf(), "Content-Type": "application/json"})
        with self.opener.open(request, timeout=30) as r:
            return json.loads(r.read())


def _grade_by_hand(out: Path, student: str, score: float, comment: str) -> dict:
    """Start ``make formgrade OUT=out`` and, through Formgrader's API, give ``student``'s written
    answer ``why`` ``score`` points and ``comment``; returns what the API answered."""
    port = _free_port()
    env = dict(os.environ, BROWSER="true")
    proc = subprocess.Popen(["make", "-s", "formgrade", f"OUT={out}", f"PORT={port}",
                             f"LAB_ARGS=--IdentityProvider.token={TOKEN} --no-browser"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert proc.poll() is None, "make formgrade exited before the server answered"
            assert time.monotonic() < deadline, "Formgrader did not answer within 90 s"
            time.sleep(0.5)
        fg = Formgrader(base)
        assert [a["name"] for a in fg.get("/formgrader/api/assignments")] == [ASSIGNMENT]
        submitted = {s["student"]: s for s in fg.get(f"/formgrader/api/submitted_notebooks/{ASSIGNMENT}/sq")}
        grades = fg.get(f"/formgrader/api/grades?submission_id={submitted[student]['id']}")
        comments = fg.get(f"/formgrader/api/comments?submission_id={submitted[student]['id']}")
        why = next(g for g in grades if g["name"] == "why")
        assert why["auto_score"] is None and why["needs_manual_grade"]
        answer = fg.put(f"/formgrader/api/grade/{why['id']}", {"manual_score": score, "extra_credit": None})
        note = next(c for c in comments if c["name"] == "why")
        fg.put(f"/formgrader/api/comment/{note['id']}", {"manual_comment": comment})
        return answer
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def term(tmp_path_factory):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = tmp_path_factory.mktemp("term")
    source, subs, out = root / "solutions", root / "submissions", root / "out"
    (source / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(square_assignment(), source / ASSIGNMENT / "sq.ipynb")
    release = nbformat.read(generate_release(ASSIGNMENT, root / "release", source_root=source) / "sq.ipynb",
                            as_version=4)
    for student, nb in {"alice": _answer(release, **MODEL), "bob": release,
                        "gina": _answer(release, **{**MODEL, "square": "def square(x):\n    return 3 * x"})}.items():
        (subs / student / ASSIGNMENT).mkdir(parents=True)
        nbformat.write(nb, subs / student / ASSIGNMENT / "sq.ipynb")
    started = time.monotonic()
    _grade(subs, out, source)
    times = {"grade": time.monotonic() - started}
    first = _rows(out)
    started = time.monotonic()
    api = _grade_by_hand(out, "alice", 1, COMMENT)
    times["formgrade"] = time.monotonic() - started
    print(f"\nrun times: {times}")
    return {"root": root, "source": source, "subs": subs, "out": out, "first": first, "api": api}


def _manual(out: Path, student: str) -> tuple[float | None, str | None, bool]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        grade = gb.find_grade("why", "sq", ASSIGNMENT, student)
        comment = gb.find_comment("why", "sq", ASSIGNMENT, student)
        return grade.manual_score, comment.manual_comment, bool(grade.needs_manual_grade)


def test_out_is_an_nbgrader_course_with_the_autograded_notebooks(term):
    out = term["out"]
    for student in ("alice", "bob", "gina"):
        for where in ("submitted", "autograded", "feedback"):
            assert any((out / where / student / ASSIGNMENT).iterdir()), (where, student)
    assert (out / "source" / ASSIGNMENT / "sq.ipynb").is_file() and (out / "release" / ASSIGNMENT / "sq.ipynb").is_file()
    row = term["first"]["alice"]
    assert (row["auto_score"], row["manual_score"], row["score"], row["max_score"]) == ("5", "", "5", "6")
    assert row["reason"] == "1 point of written answers await manual grading"


def test_formgrader_records_the_manual_score(term):
    assert term["api"]["manual_score"] == 1 and not term["api"]["needs_manual_grade"]
    assert _manual(term["out"], "alice") == (1, COMMENT, False)


def test_a_full_rerun_keeps_the_manual_grade_and_counts_it(term, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(term["out"], out)
    _grade(term["subs"], out, term["source"])
    assert _manual(out, "alice") == (1, COMMENT, False)
    rows = _rows(out)
    assert (rows["alice"]["auto_score"], rows["alice"]["manual_score"], rows["alice"]["score"]) == ("5", "1", "6")
    assert rows["alice"]["reason"] == ""  # nothing awaits grading by hand any more
    assert rows["gina"] == term["first"]["gina"] and rows["bob"] == term["first"]["bob"]


def test_a_one_student_rerun_keeps_it_and_a_changed_submission_is_flagged(term, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(term["out"], out)
    _grade(term["subs"], out, term["source"], "--student", "alice")
    assert _manual(out, "alice") == (1, COMMENT, False)
    assert _rows(out)["alice"]["score"] == "6"
    subs = tmp_path / "subs"
    shutil.copytree(term["subs"], subs)
    changed = _answer(nbformat.read(subs / "alice" / ASSIGNMENT / "sq.ipynb", as_version=4),
                      square="def square(x):\n    return x ** 2")
    nbformat.write(changed, subs / "alice" / ASSIGNMENT / "sq.ipynb")
    _grade(subs, out, term["source"], "--student", "alice")
    assert _manual(out, "alice") == (1, COMMENT, True)  # kept, and flagged for review
    row = _rows(out)["alice"]
    assert row["manual_score"] == "1" and row["score"] == "6"
    assert "the submission changed since it was graded by hand" in row["reason"]
    assert "1 point graded by hand await review in Formgrader" in row["reason"]


def _text(path: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def test_make_feedback_shows_the_manual_grade_and_hides_the_hidden_tests(term, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(term["out"], out)
    page = out / "feedback" / "alice" / ASSIGNMENT / "sq.html"
    assert COMMENT not in _text(page)  # rendered before the TA graded
    done = subprocess.run(["make", "-s", "feedback", f"OUT={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    text = _text(page)
    assert COMMENT in text and re.search(r"Score:\s*6(\.0)?\s*/\s*6", text), text[:2000]
    assert "square(-4)" not in text  # the hidden test
    assert _rows(out)["alice"]["score"] == "6"  # grades.csv rebuilt from the gradebook too


def test_the_canvas_export_parses_back_to_the_totals(term, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(term["out"], out)
    roster = tmp_path / "roster.csv"
    roster.write_text("student,name,id,sis_id,section\nalice,Alice Liddell,101,S-1,A\ngina,Gina Gray,102,S-2,B\n")
    done = subprocess.run(["make", "-s", "export", f"OUT={out}", "FORMAT=canvas", f"ROSTER={roster}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(out / f"{ASSIGNMENT}_canvas.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["Student", "ID", "SIS User ID", "Section", ASSIGNMENT]
    assert table[1][0].strip() == "Points Possible" and float(table[1][4]) == 6
    exported = {r[0]: (r[1], r[2], r[3], float(r[4])) for r in table[2:]}
    totals = {r["student"]: float(r["score"]) for r in _rows(out).values()}
    assert exported == {"Alice Liddell": ("101", "S-1", "A", totals["alice"]),
                        "Gina Gray": ("102", "S-2", "B", totals["gina"]), "bob": ("", "", "", totals["bob"])}
    assert totals == {"alice": 6, "gina": 3, "bob": 0}
    done = subprocess.run(["make", "-s", "export", f"OUT={out}", "FORMAT=csv"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(out / f"{ASSIGNMENT}_csv.csv", newline="") as f:
        plain = {r["student"]: float(r["score"]) for r in csv.DictReader(f)}
    assert plain == totals


def test_the_ta_commands_refuse_a_folder_without_a_graded_class(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for target in ("feedback", "export", "formgrade"):
        done = subprocess.run(["make", "-s", target, f"OUT={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode != 0, target
        assert "holds no graded class" in done.stderr or "usage: make formgrade" in done.stdout, target
