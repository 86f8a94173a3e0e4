"""`make lab` starts JupyterLab 4 on 127.0.0.1:$PORT with nbgrader and ipywidgets working."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "course-kit-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


@pytest.fixture(scope="module")
def lab():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port = _free_port()
    env = dict(os.environ, BROWSER="true")  # never try to open a browser
    proc = subprocess.Popen(["make", "-s", "lab", f"PORT={port}",
                             f"LAB_ARGS=--IdentityProvider.token={TOKEN} --no-browser"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if _get(f"{base}/api/status?token={TOKEN}")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert proc.poll() is None, "make lab exited before the server answered"
            time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 90 s")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_lab_page_loads_with_nbgrader_and_widgets(lab):
    status, page = _get(f"{lab}/lab?token={TOKEN}")
    assert status == 200
    assert "@jupyter/nbgrader" in page  # the lab extension (validate button, formgrader, ...)
    assert "@jupyter-widgets/jupyterlab-manager" in page  # ipywidgets renders in the lab
    status, _ = _get(f"{lab}/lab/tree/lectures?token={TOKEN}")
    assert status == 200


def test_lab_serves_the_lectures_and_the_formgrader(lab):
    import json

    status, body = _get(f"{lab}/api/contents/lectures?token={TOKEN}")
    assert status == 200 and "01_gd_sgd.ipynb" in body
    status, body = _get(f"{lab}/formgrader/api/assignments?token={TOKEN}")
    assert status == 200
    assert "ps1_gd_sgd" in [a["name"] for a in json.loads(body)]
