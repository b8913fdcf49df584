"""Atomic checkpoints: a run interrupted at any moment leaves either the old file or the new one.

``save_checkpoint`` writes to a temporary file in the same folder, flushes it to disk and renames
it over the target (``os.replace`` is atomic on POSIX and Windows). ``load_checkpoint`` reads with
``weights_only=True``: a checkpoint holds tensors, numbers, strings and plain containers only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "atomic_write_text"]


def _atomic_replace(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    _atomic_replace(Path(path), lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; start without --resume or point --out at the run folder")
    return torch.load(path, map_location=map_location, weights_only=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (results files, reports)."""
    _atomic_replace(Path(path), lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
