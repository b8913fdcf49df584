"""JupyterLab as root (most containers): the README's variant ``jupyter lab --allow-root notebooks/``
starts and serves the course; the plain command refuses, which is why the README gives the variant.

Both servers run from this interpreter's environment on 127.0.0.1 with throw-away Jupyter folders,
and are shut down through the API (then by their process id if they do not stop).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs to run as root")]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab(tmp_path: Path, *flags: str):
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "rt")):
        (tmp_path / sub).mkdir(exist_ok=True)
        env[var] = str(tmp_path / sub)
    port, token = _port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", *flags, "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           str(NOTEBOOKS)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=tmp_path)
    return proc, f"http://127.0.0.1:{port}/api", {"Authorization": f"token {token}"}


def _call(url: str, headers: dict, method: str = "GET"):
    req = urllib.request.Request(url, method=method, headers=headers, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=2) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def test_allow_root_variant_serves_the_course_and_the_plain_command_refuses(tmp_path):
    plain, _, _ = _lab(tmp_path)
    out, _ = plain.communicate(timeout=60)
    assert plain.returncode != 0 and b"Running as root is not recommended" in out

    proc, api, headers = _lab(tmp_path, "--allow-root")
    try:
        status, deadline = None, time.monotonic() + 60
        while status is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                status = _call(f"{api}/status", headers)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        assert status is not None and "started" in status, "JupyterLab did not answer as root with --allow-root"
        listing = _call(f"{api}/contents", headers)
        assert "00_start_here.ipynb" in {item["name"] for item in listing["content"]}
        _call(f"{api}/shutdown", headers, "POST")
        proc.wait(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:  # only the server this test started
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
