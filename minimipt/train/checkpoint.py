"""Checkpoints that are written atomically and verified by content when read.

``save_checkpoint`` goes through :func:`minimipt.fileio.atomic_write` (temporary file, fsync,
rename) and records the file's sha256 in a sidecar ``<name>.sha256`` (``sha256sum`` format, so
``sha256sum -c checkpoint.pt.sha256`` checks it by hand). The sidecar is written twice: before the
rename it lists the new hash *and* the one recorded for the file still in place, after the rename
only the new one. A process killed at any moment therefore leaves a checkpoint whose hash is listed.

``load_checkpoint`` checks that hash, then reads with ``weights_only=True``: a checkpoint holds
tensors, numbers, strings and plain containers only, never objects whose loading runs code. Every
failure is a :class:`CheckpointError` (a ``ValueError``) naming the file and what to do.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..fileio import atomic_write, atomic_write_text, sha256_file, sha256_stream

__all__ = ["save_checkpoint", "load_checkpoint", "verify_checkpoint", "CheckpointError", "sidecar_path",
           "recorded_hashes"]


class CheckpointError(ValueError):
    """A checkpoint file is missing its content, was changed after it was written, or cannot be read."""


def sidecar_path(path: str | Path) -> Path:
    """``checkpoint.pt`` → ``checkpoint.pt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def recorded_hashes(path: str | Path) -> list[str] | None:
    """The sha256 values the sidecar lists for ``path`` (None when there is no sidecar)."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    hashes = []
    for line in side.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.strip().partition("  ")
        if name == Path(path).name and len(digest) == 64:
            hashes.append(digest.lower())
    return hashes


def _write_sidecar(path: Path, hashes: list[str]) -> None:
    atomic_write_text(sidecar_path(path), "".join(f"{h}  {path.name}\n" for h in dict.fromkeys(hashes)))


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> str:
    """``torch.save(obj)`` to ``path`` atomically and record its sha256 beside it; returns the hash."""
    path = Path(path)
    new: list[str] = []

    def record(tmp: Path) -> None:  # the new file is complete but not yet in place
        new.append(sha256_file(tmp))
        old = (recorded_hashes(path) or [sha256_file(path)]) if path.is_file() else []
        _write_sidecar(path, new + old)

    atomic_write(path, lambda f: torch.save(obj, f), before_replace=record)
    _write_sidecar(path, new)
    return new[0]


_REDO = "restore it from a copy, or start the run again with --overwrite (this discards the run)"


def verify_checkpoint(path: str | Path, f: BinaryIO | None = None) -> str:
    """Check ``path`` against its recorded sha256 (reading ``f``, an open handle on it, if given);
    returns ``"verified"`` or ``"unverified"`` (no sidecar: a warning names the file). Raises
    :class:`CheckpointError` on a mismatch."""
    path = Path(path)
    recorded = recorded_hashes(path)
    if recorded is None:
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        warnings.warn(f"{path} has no recorded sha256 ({sidecar_path(path).name} is missing): it is loaded "
                      "unverified", UserWarning, stacklevel=3)
        return "unverified"
    if f is None:
        with open(path, "rb") as f:
            got = sha256_stream(f)
    else:
        got = sha256_stream(f)
    if got not in recorded:
        raise CheckpointError(f"{path} does not match the sha256 recorded in {sidecar_path(path).name} (file "
                              f"{got[:16]}…, recorded {recorded[0][:16]}…): it was changed or corrupted after "
                              f"it was written; {_REDO}")
    return "verified"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    verify: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    ``verify``: check the file against its recorded sha256 first (see :func:`verify_checkpoint`); the
    bytes checked are the bytes loaded (one open file), even if a writer replaces the file meanwhile.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; start without --resume, or point --out at the "
                                "folder of the run to continue")
    with open(path, "rb") as f:
        if verify:
            verify_checkpoint(path, f)
            f.seek(0)
        try:
            obj = torch.load(f, map_location=map_location, weights_only=True)
        except Exception as err:  # damaged bytes surface as many exception types inside torch.load
            raise CheckpointError(f"{path} cannot be read as a checkpoint: {_diagnose(f, err)}; {_REDO}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dictionary; {_REDO}")
    return obj


def _diagnose(f: BinaryIO, err: BaseException) -> str:
    """What is wrong with an unreadable file, without torch's advice to drop ``weights_only``."""
    f.seek(0, 2)
    if f.tell() == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(f):
        return "it is not a file written by torch.save (truncated, or other content)"
    if isinstance(err, pickle.UnpicklingError):
        return ("it holds Python objects other than tensors and plain values, which are refused because "
                "loading them could run code")
    return f"the archive is corrupt ({type(err).__name__})"
