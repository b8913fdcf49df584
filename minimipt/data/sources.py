"""Where raw data comes from, and how we know it is the right data.

Source order for every canonical file (the same for AG News and WikiText):

1. a local folder holding the canonical file, verified against the sha256 manifests shipped in
   ``data/manifests/``: the ``root`` argument if given, else ``MINIMIPT_DATA`` if set, else the
   repository's ``data/`` (and its git-ignored ``data/raw/``, where ``prepare --from`` copies files);
2. otherwise Hugging Face ``datasets`` (``fancyzhx/ag_news``, ``Salesforce/wikitext``), only when the
   hub is reachable -- decided within about two seconds: ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``
   or a missing ``datasets`` package answer at once, else one HTTP request with a short timeout;
3. otherwise :class:`FileNotFoundError` naming the missing files, the folders searched and the
   command that prepares them.

A file whose sha256 disagrees with the manifest raises :class:`ChecksumError` (a ``ValueError``)
naming the file. A canonical file with no published hash (WikiText-103 train, the raw WikiText
variants) is accepted with an :class:`UnverifiedFileWarning` that prints its hash.

``datasets`` is an optional extra and is imported only inside the functions that use it.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from .. import fileio
from ..env import DATA_VAR, data_dir, repo_root

__all__ = [
    "ChecksumError",
    "UnverifiedFileWarning",
    "MANIFEST_DIR",
    "SAMPLES_DIR",
    "sha256_file",
    "read_manifest",
    "known_hashes",
    "verify_file",
    "search_roots",
    "find_files",
    "hub_status",
    "describe",
    "hub_load",
    "missing_files_error",
]

MANIFEST_DIR = repo_root() / "data" / "manifests"
SAMPLES_DIR = repo_root() / "data" / "samples"

# Alternative folder names accepted for a canonical folder (the shared-data layout uses ``ag_news/``).
ALIASES = {"ag_news_csv": ("ag_news",)}

_TRUE = {"1", "true", "yes", "on"}


class ChecksumError(ValueError):
    """A data file's sha256 disagrees with the shipped manifest."""


class UnverifiedFileWarning(UserWarning):
    """A canonical file was used although no published sha256 exists to check it against."""


# --------------------------------------------------------------------------------------------
# hashes


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file; cached per (path, size, mtime) in this process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = fileio.sha256_file(path)
    return _HASH_CACHE[key]


def read_manifest(path: str | Path) -> dict[str, str]:
    """Parse a ``sha256sum``-style manifest (``<hex>  <relative path>``; ``#`` starts a comment)."""
    out: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        digest, _, rel = line.partition(" ")
        rel = rel.strip().lstrip("*")
        if len(digest) != 64 or not rel:
            raise ValueError(f"{path}:{n}: not a sha256 manifest line: {line!r}")
        out[rel] = digest.lower()
    return out


def known_hashes(manifest_dir: str | Path | None = None) -> dict[str, str]:
    """All published hashes, ``{canonical relative path: sha256}``, from ``data/manifests/*.sha256``."""
    folder = Path(manifest_dir) if manifest_dir is not None else MANIFEST_DIR
    out: dict[str, str] = {}
    for path in sorted(folder.glob("*.sha256")):
        out.update(read_manifest(path))
    return out


def verify_file(path: str | Path, key: str, hashes: dict[str, str] | None = None) -> str:
    """Check ``path`` (the canonical file ``key``, e.g. ``"ag_news_csv/test.csv"``) against its hash.

    Returns ``"verified"``, or ``"unverified"`` (no published hash; warns). Raises
    :class:`ChecksumError` naming the file on a mismatch.
    """
    hashes = known_hashes() if hashes is None else hashes
    got = sha256_file(path)
    want = hashes.get(key)
    if want is None:
        warnings.warn(
            f"{path}: no published sha256 is known for {key!r}; using it unverified "
            f"(sha256 {got}, {Path(path).stat().st_size:,} bytes).",
            UnverifiedFileWarning, stacklevel=3)
        return "unverified"
    if got != want:
        raise ChecksumError(
            f"checksum mismatch for {path} (canonical file {key!r}): sha256 is {got}, the manifest "
            f"in data/manifests/ expects {want}. The file is corrupt, truncated or a different "
            "version; replace it with the canonical release (or delete it to download through "
            "`datasets`).")
    return "verified"


# --------------------------------------------------------------------------------------------
# local folders


def search_roots(root: str | Path | None = None) -> list[Path]:
    """Folders searched for canonical files: ``[root]`` if given, else ``MINIMIPT_DATA`` (or the
    repository's ``data/``) and its ``raw/`` subfolder."""
    if root is not None:
        return [Path(root).expanduser()]
    base = data_dir()
    return [base, base / "raw"]


def _candidates(key: str) -> list[str]:
    folder, _, name = key.partition("/")
    return [key] + [f"{alias}/{name}" for alias in ALIASES.get(folder, ())]


def find_files(keys: list[str], root: str | Path | None = None) -> dict[str, Path] | None:
    """Locate all canonical files ``keys`` in one search root; ``None`` if no root has them all.

    Files found are verified (:func:`verify_file`) before they are returned.
    """
    hashes = known_hashes()
    for base in search_roots(root):
        found = {}
        for key in keys:
            hit = next((base / rel for rel in _candidates(key) if (base / rel).is_file()), None)
            if hit is None:
                break
            found[key] = hit
        else:
            for key, path in found.items():
                verify_file(path, key, hashes)
            return found
    return None


# --------------------------------------------------------------------------------------------
# the Hugging Face hub


@dataclass(frozen=True)
class HubStatus:
    online: bool
    reason: str

    def __bool__(self) -> bool:
        return self.online


def hub_status(timeout: float = 2.0, repo: str = "fancyzhx/ag_news") -> HubStatus:
    """Can ``datasets`` reach the hub? Answers within about ``timeout`` seconds, never retries.

    Offline when ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set, when ``datasets`` is not
    installed, or when one request for the dataset's hub record
    (``<HF_ENDPOINT or https://huggingface.co>/api/datasets/<repo>``) does not return HTTP 200
    within ``timeout`` (an open TCP port is not enough: proxies accept connections too). The
    request runs in a daemon thread so that a slow DNS lookup cannot stall the caller either.
    """
    import importlib.util
    import urllib.request

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return HubStatus(False, f"{var}={os.environ[var]} is set")
    try:
        missing = importlib.util.find_spec("datasets") is None
    except (ImportError, ValueError):
        missing = True
    if missing:
        return HubStatus(False, "the optional `datasets` package is not installed "
                                "(pip install -e \".[data]\")")
    url = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/") + f"/api/datasets/{repo}"
    result: list[object] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                result.append(reply.status)
        except Exception as err:  # URLError, HTTPError, socket errors, TLS errors
            result.append(err)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not result:
        return HubStatus(False, f"{url} did not answer within {timeout:g} s")
    if result[0] != 200:
        return HubStatus(False, f"{url} is not reachable ({result[0]!r})")
    return HubStatus(True, f"{url} answered")


def describe(path: Path, key: str) -> str:
    """How a found file was checked, for a loader's ``source`` field."""
    how = "sha256 verified" if key in known_hashes() else "UNVERIFIED: no published sha256"
    return f"{path} ({how})"


def hub_load(repo: str, config: str | None, split: str):
    """``datasets.load_dataset(repo, config, split=split)``; ``datasets`` imported here only."""
    import datasets  # optional extra

    return datasets.load_dataset(repo, config, split=split)


def missing_files_error(what: str, keys: list[str], root: str | Path | None, hub: HubStatus,
                        prepare: str, hub_error: BaseException | None = None) -> FileNotFoundError:
    """The error raised when neither a local folder nor the hub can provide ``keys``."""
    roots = ", ".join(str(p) for p in search_roots(root))
    where = ("the `root` argument" if root is not None else
             f"{DATA_VAR}" if os.environ.get(DATA_VAR) else f"the default data folder ({DATA_VAR} unset)")
    hub_line = (f"the Hugging Face hub failed: {hub_error!r}" if hub_error is not None
                else f"the Hugging Face hub is not used: {hub.reason}")
    return FileNotFoundError(
        f"{what} needs {', '.join(keys)}; not found in {roots} (from {where}), and {hub_line}. "
        f"Fix: run `{prepare}` with DIR holding those canonical files (it verifies and copies them "
        f"to {data_dir() / 'raw'}), or pass root=DIR / set {DATA_VAR}=DIR, or go online with the "
        "`datasets` package installed.")
