"""The run folder (``--out``): one writer at a time, no run's results overwritten by accident, and
writability known before the first training step.

:class:`RunFolder` is claimed before any data is loaded or any step is taken:

* the path must be a folder that can be created and written (a probe file is written atomically
  and removed), else :class:`RunFolderError` names the path and the reason;
* an exclusive lock (``fcntl.flock`` on ``run.lock`` inside the folder, which records the owner's
  pid, host, start time and command) is held while the run writes; a second run gets
  :class:`RunFolderBusy` naming the owner. The kernel drops the lock when its process dies, so a
  lock file that still names an owner although nobody holds the lock was left by a killed run: on
  this host it is taken over with a message on stderr; a record from another host is refused,
  since this machine cannot tell whether that run still writes (not every network filesystem
  shares locks between hosts);
* a folder that holds a run (``results.json`` or ``checkpoint.pt``) is refused unless ``resume``
  (continue it from its checkpoint, which is verified against its recorded sha256 here) or
  ``overwrite`` (delete that run's files and start again).

Only the main process of a ``torchrun`` job locks and writes (``writer=True``); the other ranks make
the same read-only decisions so that every rank stops on the same refusal.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from pathlib import Path

from ..fileio import TMP_GLOB, atomic_write
from .checkpoint import sidecar_path, verify_checkpoint
from .provenance import now_iso

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the record and the other checks still apply
    fcntl = None

__all__ = ["RunFolder", "RunFolderError", "RunFolderBusy", "LOCK", "RESULTS", "CKPT"]

LOCK, RESULTS, CKPT = "run.lock", "results.json", "checkpoint.pt"


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (not a folder, not writable, holds another run ...)."""


class RunFolderBusy(RunFolderError):
    """Another live process holds the run folder's lock."""


class RunFolder:
    """Claim ``out`` for one run; use as a context manager (the lock is released on exit)."""

    def __init__(self, out: str | Path, *, resume: bool = False, overwrite: bool = False, writer: bool = True):
        if resume and overwrite:
            raise RunFolderError("resume and overwrite exclude each other: --resume continues the run in the "
                                 "folder, --overwrite deletes it")
        self.path = Path(out)
        self.resume, self.overwrite, self.writer = resume, overwrite, writer
        self.lock_path = self.path / LOCK
        self._fd: int | None = None
        self.took_over: dict | None = None  # the record of a stale lock this claim replaced

    def __enter__(self) -> "RunFolder":
        self.claim()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ----------------------------------------------------------------------------------------
    def claim(self) -> None:
        """Check the folder, take the lock, apply ``overwrite``; raises before anything is trained."""
        self._make_folder()
        if self.writer:
            self._lock()
        try:
            self._check_contents()
            if self.writer:
                self._probe_writable()
                if self.overwrite:
                    self._delete_run()
                # half-written temporary files of a killed writer: the lock says no writer is left
                for stale in self.path.glob(TMP_GLOB):
                    stale.unlink(missing_ok=True)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Empty the record (a clean exit leaves no owner behind) and drop the lock."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        finally:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    # ----------------------------------------------------------------------------------------
    def _make_folder(self) -> None:
        p = self.path
        try:
            is_file = p.exists() and not p.is_dir()
            if not is_file:
                p.mkdir(parents=True, exist_ok=True)  # every rank: the writer may not have made it yet
        except OSError as err:
            raise RunFolderError(f"cannot create the run folder {p} (--out): {err.strerror or err}; choose a "
                                 "path you can write to") from None
        if is_file:
            raise RunFolderError(f"the run folder {p} (--out) is a file, not a folder; choose a folder path")

    def _lock(self) -> None:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(f"cannot write in the run folder {self.path} (--out): {err.strerror or err} "
                                 f"({self.lock_path.name}); choose a folder you can write to") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                owner = _read_record(fd)
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunFolderBusy(f"the run folder {self.path} is in use by {_describe(owner)} "
                                        f"({self.lock_path}); wait for that run to end or choose another --out") \
                        from None
                raise RunFolderError(f"cannot lock {self.lock_path}: {err.strerror or err} (this filesystem has no "
                                     "file locks); choose an --out on a local disk") from None
        previous = _read_record(fd)
        if previous is not None:  # an owner that ended without releasing: it was killed
            if previous.get("host") not in (None, socket.gethostname()):
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                raise RunFolderBusy(
                    f"{self.lock_path} records {_describe(previous)}, which did not release the folder; that run may "
                    f"still be writing from the other machine (this one cannot check). If it is not, delete "
                    f"{self.lock_path} and run again")
            alive = _alive(previous.get("pid"))
            if alive and fcntl is None:
                os.close(fd)
                raise RunFolderBusy(f"the run folder {self.path} is in use by {_describe(previous)} "
                                    f"({self.lock_path}); wait for that run to end or choose another --out (if no "
                                    f"run uses it, delete {self.lock_path})")
            self.took_over = previous
            why = "its pid now belongs to another process" if alive else "that process is gone"
            print(f"minimipt: taking over a stale lock in {self.path}: {_describe(previous)} ended without "
                  f"releasing it ({why})", file=sys.stderr)
        argv = ["python -m minimipt", *sys.argv[1:]] if sys.argv[0].endswith("__main__.py") else sys.argv
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(), "command": " ".join(argv)}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(fd)
        self._fd = fd

    def _check_contents(self) -> None:
        results, ckpt = self.path / RESULTS, self.path / CKPT
        if self.resume:
            if not ckpt.is_file():
                raise FileNotFoundError(f"nothing to resume in {self.path}: it holds no {CKPT}"
                                        + (f" (its {RESULTS} says {_summary(results)})" if results.is_file() else "")
                                        + "; run without --resume (add --overwrite to replace what is there)")
            verify_checkpoint(ckpt)  # before any data is loaded; raises CheckpointError naming the fix
            return
        if self.overwrite or not (results.is_file() or ckpt.is_file()):
            return
        what = _summary(results) if results.is_file() else f"a {CKPT} of an unfinished run"
        raise RunFolderError(f"the run folder {self.path} holds another run ({what}); pass --resume to continue "
                             "it, --overwrite to replace it, or choose a new --out")

    def _probe_writable(self) -> None:
        probe = self.path / ".write-probe"
        try:
            atomic_write(probe, lambda f: f.write(b"minimipt\n"))
            probe.unlink()
        except OSError as err:
            raise RunFolderError(f"cannot write in the run folder {self.path} (--out): {err.strerror or err}; "
                                 "choose a folder you can write to") from None

    def _delete_run(self) -> None:
        ckpt = self.path / CKPT
        for f in [self.path / RESULTS, ckpt, sidecar_path(ckpt), *self.path.glob(TMP_GLOB)]:
            f.unlink(missing_ok=True)


def _read_record(fd: int) -> dict | None:
    """The owner recorded in a lock file (None when empty: released cleanly or never used)."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096).decode("utf-8", "replace").strip()
    if not raw:
        return None
    try:
        rec = json.loads(raw)
    except json.JSONDecodeError:
        return {"unreadable": raw[:80]}
    return rec if isinstance(rec, dict) else {"unreadable": raw[:80]}


def _describe(rec: dict | None) -> str:
    if not rec:
        return "another process"
    if "unreadable" in rec:
        return f"an unknown owner (record {rec['unreadable']!r})"
    return (f"pid {rec.get('pid')} on host {rec.get('host')} (started {rec.get('started')}: "
            f"{rec.get('command') or 'no command recorded'})")


def _alive(pid) -> bool:
    """Whether a process with this pid exists on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: assume it lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _summary(results: Path) -> str:
    """A short description of a results file (task, model, progress)."""
    try:
        r = json.loads(results.read_text())
        cfg = r.get("config", {})
        state = ("failed: " + str(r["failed"]) if r.get("failed") else "complete" if r.get("complete")
                 else f"unfinished, {r.get('steps')}/{r.get('total_steps')} steps")
        return f"{RESULTS}: {cfg.get('task')}/{cfg.get('model')}, {state}"
    except (OSError, ValueError, AttributeError):
        return f"a {RESULTS}"
