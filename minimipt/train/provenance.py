"""What a results file records about the run: code version, software, hardware."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

__all__ = ["provenance", "git_commit", "now_iso"]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str | None:
    """``MINIMIPT_GIT_COMMIT`` when set (a copy of the tree on a remote GPU machine, which may hold no
    ``.git`` or a stale one), else the checked-out commit, else None."""
    return os.environ.get("MINIMIPT_GIT_COMMIT") or _git("rev-parse", "HEAD")


def provenance(device: torch.device, world_size: int = 1) -> dict:
    """Git commit (and whether the tree had uncommitted changes), versions and hardware."""
    from .._version import __version__

    status = _git("status", "--porcelain", "--untracked-files=no")
    hw: dict = {"device": str(device), "world_size": world_size, "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
        hw["gpu_count"] = torch.cuda.device_count()
    else:
        hw["threads"] = torch.get_num_threads()
    return {
        "git_commit": git_commit(),
        "git_dirty": bool(status) if status is not None else None,
        "minimipt_version": __version__,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "hardware": hw,
    }
