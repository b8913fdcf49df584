"""Atomic checkpoints: a run interrupted at any moment leaves either the old file or the new one.

``save_checkpoint`` goes through :func:`minimipt.fileio.atomic_write` (temporary file, fsync,
rename). ``load_checkpoint`` reads with ``weights_only=True``: a checkpoint holds tensors, numbers,
strings and plain containers only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; start without --resume or point --out at the run folder")
    return torch.load(path, map_location=map_location, weights_only=True)
