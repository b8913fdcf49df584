"""Atomic file writes and content hashes.

``atomic_write`` writes to a temporary file beside the target (``.<name>.tmp-<pid>``), flushes it to
disk and renames it over the target (``os.replace`` is atomic on POSIX and Windows): an interrupted
write leaves either the old file or the new one, never half. A leftover temporary file can only come
from a killed process; readers never look at those names.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "sha256_file", "sha256_stream",
           "TMP_GLOB"]

TMP_GLOB = ".*.tmp-*"  # what a killed writer can leave behind


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any], *,
                 before_replace: Callable[[Path], Any] | None = None) -> None:
    """``write(f)`` into a temporary binary file beside ``path``, fsync, then rename over ``path``.

    ``before_replace(tmp)``, if given, runs on the complete temporary file just before the rename
    (e.g. to record its hash first, so that a record always exists for whichever file is in place).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON atomically (results files, metadata)."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def sha256_stream(f: BinaryIO) -> str:
    """Hex sha256 of what is left to read in an open binary file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return sha256_stream(f)
