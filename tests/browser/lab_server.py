"""A JupyterLab server for the browser tests: started on loopback, always shut down.

``JupyterLab.start(notebooks, workdir)`` launches ``python -m jupyterlab`` from the running
interpreter's environment (the installed course, not whatever ``jupyter`` is first on PATH) with

* token authentication on (a fresh random token), bound to 127.0.0.1 on a free port, no browser;
* temporary config, data, runtime, settings and workspace folders under ``workdir``, so nothing the
  learner has configured (or that a previous run left) changes what the test sees;
* a *copy* of the notebooks as its root folder, so running them never writes outputs or
  checkpoints into the repository;
* the test process's environment (``MINIMIPT_SMOKE=1`` and friends from ``conftest.py`` reach the
  kernels through it).

It waits for the server by polling its HTTP API (bounded), and ``stop()`` shuts it down: the
``/api/shutdown`` endpoint first (it also stops the kernels), then SIGTERM and SIGKILL to the
server's process group and to any process it started (kernels run in sessions of their own).
``stop()`` returns what, if anything, had to be killed, and is safe to call twice.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = ["NOTEBOOKS", "JupyterLab", "stop_and_check", "free_port", "port_is_open", "alive"]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"  # the course

# JupyterLab settings for a quiet, deterministic page: no news or update prompts, no autosave,
# every cell kept in the DOM (no windowing) so waits can see all of them.
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class JupyterLab:
    """A running JupyterLab server (create it with :meth:`start`)."""

    proc: subprocess.Popen
    port: int
    token: str
    root: Path
    log_path: Path
    _log: object = field(repr=False)
    stopped: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Address of a page, with the token, e.g. ``url("lab/tree/00_start_here.ipynb")``."""
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 5.0):
        """Call the REST API (token in the Authorization header); returns the decoded JSON or None."""
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(f"{self.base_url}/api/{path.lstrip('/')}", data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines the server wrote (for failure messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    @classmethod
    def start(cls, notebooks: Path, workdir: Path, timeout: float = 60.0) -> "JupyterLab":
        """Copy ``notebooks`` into ``workdir`` and serve them; return once the API answers.

        Raises ``RuntimeError`` (with the server log) if the server exits or does not answer
        within ``timeout`` seconds.
        """
        notebooks, workdir = Path(notebooks), Path(workdir)
        if not notebooks.is_dir():
            raise FileNotFoundError(f"notebooks={notebooks}: no such folder; pass the course's notebooks/ folder")
        root = workdir / "notebooks"
        shutil.copytree(notebooks, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        dirs = {name: workdir / name for name in ("config", "data", "runtime", "settings", "workspaces")}
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        for rel, values in USER_SETTINGS.items():
            target = dirs["settings"] / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))

        env = dict(os.environ)  # the kernels inherit MINIMIPT_SMOKE=1 etc. through the server
        env.update(JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
                   JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), JUPYTER_PLATFORM_DIRS="1")
        port, token = free_port(), secrets.token_hex(24)
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               f"--LabApp.user_settings_dir={dirs['settings']}",
               f"--LabApp.workspaces_dir={dirs['workspaces']}",
               "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands by id
               "--ServerApp.terminals_enabled=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        log_path = workdir / "jupyterlab.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        lab = cls(proc=proc, port=port, token=token, root=root, log_path=log_path, _log=log)
        try:
            lab._wait_ready(timeout)
        except BaseException:
            lab.stop()
            raise
        return lab

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode} before answering; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            try:
                status = self.api("GET", "status", timeout=2.0)
                if isinstance(status, dict) and "started" in status:
                    return
                last = f"unexpected /api/status answer {status!r}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as exc:
                last = repr(exc)
            time.sleep(0.25)
        raise RuntimeError(f"JupyterLab did not answer /api/status within {timeout:.0f} s ({last}); "
                           f"log {self.log_path}:\n{self.log_tail()}")

    def processes(self) -> list[psutil.Process]:
        """The server and every process it started (kernels included), while they run."""
        try:
            server = psutil.Process(self.proc.pid)
            return [server, *server.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Shut the server and its kernels down; return descriptions of processes that had to be killed.

        Polite first (``POST /api/shutdown``), then SIGTERM, then SIGKILL. Idempotent.
        """
        if self.stopped:
            return []
        self.stopped = True
        procs = self.processes()  # remember the kernels before the server forgets them
        if self.proc.poll() is None:
            try:
                self.api("POST", "shutdown", timeout=5.0)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass  # already dying, or wedged: the signals below take over
        _, left = psutil.wait_procs(procs, timeout=timeout)
        killed = [f"pid {p.pid} ({_name(p)})" for p in left]
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not left:
                break
            for p in left:
                try:
                    if p.pid == self.proc.pid:
                        os.killpg(p.pid, sig)  # the server's whole process group
                    else:
                        p.send_signal(sig)
                except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                    pass
            _, left = psutil.wait_procs(left, timeout=grace)
        try:
            self.proc.wait(timeout=1.0)  # reap it
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        return killed


def stop_and_check(lab: JupyterLab, keep_log_in: Path | None = None) -> None:
    """Stop ``lab``; raise AssertionError if it had to be killed or anything still listens."""
    killed = lab.stop()
    if keep_log_in is not None:
        shutil.copy(lab.log_path, Path(keep_log_in) / "jupyterlab.log")
    assert not killed, f"JupyterLab did not shut down on request; killed {killed}"
    assert lab.proc.poll() is not None, f"JupyterLab (pid {lab.proc.pid}) is still running"
    assert not port_is_open(lab.port), f"something still listens on port {lab.port} after shutdown"


def alive(p: psutil.Process) -> bool:
    """True while ``p`` runs (a zombie waiting to be reaped does not count)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()[:3])
    except psutil.Error:
        return "gone"
