"""Tokenize a dataset once into compact arrays: ``python -m minimipt data prepare DATASET``.

Targets (``PREPARE_TARGETS``) and the splits they write:

=======================  =====================================  ==================================
target                   splits (array files)                   tokenizer (trained on the first)
=======================  =====================================  ==================================
``wikitext-2``           train, valid, test                     byte-level BPE, 16,384 by default
``wikitext-103``         train, valid, test                     byte-level BPE, 16,384 by default
``wikitext-2-sample``    sample-train, sample-valid, sample-test byte-level BPE, 2,048 by default
``ag_news``              train, test                            word level, min count 2
``ag_news-offline``      offline-train, offline-eval            word level, min count 2
``ag_news-sample``       sample-train, sample-eval              word level, min count 2
=======================  =====================================  ==================================

Output folder ``<MINIMIPT_DATA or data>/prepared/<name>/`` (``name`` gets ``-seed<k>`` for the
seeded AG News targets), holding ``tokenizer.json``, per split ``<split>.tokens.npy`` (uint16 when
V <= 65,536, else int32; the whole split as one stream for WikiText, the rows concatenated for AG
News with ``<split>.offsets.npy`` (N + 1,) and ``<split>.labels.npy`` (N,)), and ``meta.json``.

Idempotent: an up-to-date folder (same inputs, same settings, files intact) is left alone.
Verified by content: every file's sha256 is in ``meta.json``; :func:`load_prepared` (and the
up-to-date check) compare each file with it. A file's verified hash is remembered in
``.verified.json`` with its size and mtime, so a repeated load costs one ``stat`` per file; a file
that was written since is hashed again.
Atomic: ``meta.json`` is deleted first and written last, and every file is written to a temporary
name and renamed, so an interrupted run leaves a folder without ``meta.json``, which
:func:`load_prepared` refuses.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..fileio import TMP_GLOB, atomic_write_json, sha256_file
from ..fileio import atomic_write as _atomic
from ..env import data_dir
from . import sources
from .ag_news import load_ag_news
from .tokenizer import (encode_stream, load_tokenizer, pad_id, train_bpe, train_wordlevel)
from .wikitext import count_words, load_wikitext

__all__ = ["PREPARE_TARGETS", "FORMAT", "prepare", "load_prepared", "PreparedSplit", "prepared_dir",
           "differing_files"]

FORMAT = 1
PREPARE_TARGETS = {
    "wikitext-2": ("lm", ("train", "valid", "test"), 16_384),
    "wikitext-103": ("lm", ("train", "valid", "test"), 16_384),
    "wikitext-2-sample": ("lm", ("sample-train", "sample-valid", "sample-test"), 2_048),
    "ag_news": ("cls", ("train", "test"), None),
    "ag_news-offline": ("cls", ("offline-train", "offline-eval"), None),
    "ag_news-sample": ("cls", ("sample-train", "sample-eval"), None),
}
_SEEDED = ("ag_news-offline", "ag_news-sample")


def prepared_name(dataset: str, split_seed: int = 0) -> str:
    """The folder name of a prepared target (``ag_news-offline-seed0`` ...)."""
    return f"{dataset}-seed{split_seed}" if dataset in _SEEDED else dataset


def prepared_dir(name: str, root: str | Path | None = None) -> Path:
    """``<root or MINIMIPT_DATA or data>/prepared/<name>``."""
    return (Path(root) if root is not None else data_dir()) / "prepared" / name


# --------------------------------------------------------------------------------------------
# arrays


def _save_array(path: Path, arr: np.ndarray) -> dict:
    _atomic(path, lambda f: np.save(f, arr, allow_pickle=False))
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sources.sha256_file(path),
            "dtype": str(arr.dtype), "shape": list(arr.shape)}


def _copy_raw(keys: list[str], src: Path, root: Path) -> None:
    """Copy verified canonical files from ``src`` to ``<root>/raw/`` so later loads find them."""
    found = sources.find_files(keys, src)
    if found is None:
        return  # the loaders will raise the informative error
    for key, path in found.items():
        dest = root / "raw" / key
        if dest.exists() and dest.resolve() == path.resolve():
            continue
        if dest.exists() and sources.sha256_file(dest) == sources.sha256_file(path):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as fin:
            _atomic(dest, lambda f: shutil.copyfileobj(fin, f, 1 << 20))


def _raw_keys(dataset: str) -> list[str]:
    if dataset in ("wikitext-2", "wikitext-103"):
        return [f"{dataset}/wiki.{s}.tokens" for s in ("train", "valid", "test")]
    if dataset == "ag_news":
        return ["ag_news_csv/train.csv", "ag_news_csv/test.csv"]
    if dataset == "ag_news-offline":
        return ["ag_news_csv/test.csv"]
    return []


# --------------------------------------------------------------------------------------------
# prepare


def _load_inputs(dataset: str, kind: str, splits, src, split_seed: int):
    out = {}
    for split in splits:
        if kind == "lm":
            name = "wikitext-2" if dataset == "wikitext-2-sample" else dataset
            out[split] = load_wikitext(name, split, None if split.startswith("sample") else src)
        else:
            out[split] = load_ag_news(split, None if split.startswith("sample") else src,
                                      split_seed=split_seed)
    return out


def _fingerprint(data) -> str:
    h = hashlib.sha256()
    if hasattr(data, "text"):
        h.update(data.text.encode("utf-8"))
    else:
        for text, label in zip(data.texts, data.labels.tolist()):
            h.update(f"{label}\t{text}\n".encode("utf-8"))
    return h.hexdigest()


_VERIFIED = ".verified.json"  # {file: {"stat": [bytes, mtime_ns], "sha256": ...}} of files found intact


def differing_files(folder: Path, records: list[dict]) -> list[str]:
    """The files among ``records`` (entries of ``meta.json``: file, bytes, sha256) that are missing or
    whose content differs from the record. Hashes found intact are remembered in ``.verified.json``
    with the file's size and mtime, so checking an unchanged file again costs one ``stat``."""
    cache_path = folder / _VERIFIED
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    bad, changed = [], False
    for rec in records:
        name, path = rec["file"], folder / rec["file"]
        try:
            st = path.stat()
        except OSError:
            bad.append(name)
            continue
        stamp = [st.st_size, st.st_mtime_ns]
        seen = cache.get(name)
        if isinstance(seen, dict) and seen.get("stat") == stamp and seen.get("sha256") == rec["sha256"]:
            continue
        if st.st_size != rec["bytes"] or sha256_file(path) != rec["sha256"]:
            bad.append(name)
            changed |= cache.pop(name, None) is not None
            continue
        cache[name] = {"stat": stamp, "sha256": rec["sha256"]}
        changed = True
    if changed:
        try:
            atomic_write_json(cache_path, cache, indent=1)
        except OSError:  # a read-only data folder: the files are hashed again next time
            pass
    return bad


def _remember(folder: Path, records: list[dict]) -> None:
    """Record ``records`` (hashed as they were written) as verified at their current size and mtime."""
    cache = {}
    for rec in records:
        st = (folder / rec["file"]).stat()
        cache[rec["file"]] = {"stat": [st.st_size, st.st_mtime_ns], "sha256": rec["sha256"]}
    atomic_write_json(folder / _VERIFIED, cache, indent=1)


def _all_files(meta: dict) -> list[dict]:
    return [meta["tokenizer"]] + [f for s in meta["splits"].values() for f in s["files"].values()]


def _prepare_hint(meta: dict) -> str:
    cfg = meta.get("config", {})
    seed = f" --split-seed {cfg['split_seed']}" if cfg.get("split_seed") else ""
    return f"python -m minimipt data prepare {cfg.get('dataset', 'DATASET')}{seed} --force"


def prepare(dataset: str, *, src: str | Path | None = None, root: str | Path | None = None,
            vocab_size: int | None = None, min_count: int = 2, split_seed: int = 0,
            force: bool = False, progress: bool = True, copy_raw: bool = True) -> Path:
    """Tokenize ``dataset`` (a key of ``PREPARE_TARGETS``) and write its arrays; return the folder.

    ``src``: folder with the canonical raw files (``--from``); else the default sources
    (``MINIMIPT_DATA``/``data``, then the hub). With ``copy_raw`` the verified raw files are also
    copied to ``<root>/raw/``. ``root``: the data folder written to (default ``MINIMIPT_DATA`` or
    the repository's ``data/``); the arrays go to ``<root>/prepared/<name>/``.
    """
    from tqdm.auto import tqdm

    if dataset not in PREPARE_TARGETS:
        raise ValueError(f"dataset={dataset!r} cannot be prepared; use one of {sorted(PREPARE_TARGETS)}")
    kind, splits, default_vocab = PREPARE_TARGETS[dataset]
    if kind == "cls" and vocab_size is not None:
        raise ValueError("--vocab-size applies to the BPE (WikiText) targets; AG News uses a word "
                         "vocabulary cut by --min-count")
    name = prepared_name(dataset, split_seed)
    folder = prepared_dir(name, root)
    if src is not None and copy_raw:
        _copy_raw(_raw_keys(dataset), Path(src), Path(root) if root is not None else data_dir())
    inputs = _load_inputs(dataset, kind, splits, src, split_seed)
    config = {
        "format": FORMAT, "dataset": dataset, "kind": kind,
        "tokenizer": ({"type": "byte-level-bpe", "vocab_size": vocab_size or default_vocab} if kind == "lm"
                      else {"type": "word-level", "min_count": min_count}),
        "split_seed": split_seed if dataset in _SEEDED else None,
        "inputs": {s: _fingerprint(d) for s, d in inputs.items()},
    }
    meta_path = folder / "meta.json"
    if not force and meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old.get("config") == config:
            bad = differing_files(folder, _all_files(old))
            if not bad:
                if progress:
                    print(f"{name}: already prepared in {folder} (same inputs and settings); skipping")
                return folder
            warnings.warn(f"{folder}: {', '.join(bad)} differ from their record in meta.json (missing, truncated "
                          "or corrupted); preparing the folder again", UserWarning, stacklevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # from here on the folder is not valid until meta is rewritten
    (folder / _VERIFIED).unlink(missing_ok=True)
    for stale in folder.glob(TMP_GLOB):
        stale.unlink()

    t0 = time.time()
    first = inputs[splits[0]]
    if kind == "lm":
        tok = train_bpe(first.text.splitlines(keepends=True), vocab_size=config["tokenizer"]["vocab_size"])
    else:
        tok = train_wordlevel(first.texts, min_count=min_count)
    V = tok.get_vocab_size()
    dtype = np.uint16 if V <= 2**16 else np.int32
    tok_path = folder / "tokenizer.json"
    _atomic(tok_path, lambda f: f.write(tok.to_str().encode("utf-8")))
    meta = {"config": config, "name": name, "vocab_size": V, "pad_id": pad_id(tok),
            "tokenizer": {"file": tok_path.name, "bytes": tok_path.stat().st_size,
                          "sha256": sources.sha256_file(tok_path)},
            "splits": {}, "sources": {s: d.source for s, d in inputs.items()},
            "minimipt": __version__, "torch": torch.__version__}
    for split, data in inputs.items():
        if kind == "lm":
            n_lines = data.text.count("\n") + (not data.text.endswith("\n"))
            with tqdm(total=n_lines, desc=f"{name}/{split}", unit="line", disable=not progress) as bar:
                ids = encode_stream(tok, data.text, progress=bar.update)
            files = {"tokens": _save_array(folder / f"{split}.tokens.npy", ids.astype(dtype))}
            info = {"n_tokens": int(len(ids)), "n_words": count_words(data.text),
                    "n_chars": len(data.text)}
        else:
            lengths, parts = [], []
            with tqdm(total=len(data), desc=f"{name}/{split}", unit="row", disable=not progress) as bar:
                for start in range(0, len(data), 2000):
                    for enc in tok.encode_batch(data.texts[start:start + 2000]):
                        parts.append(np.asarray(enc.ids, dtype=np.int64))
                        lengths.append(len(enc.ids))
                    bar.update(min(2000, len(data) - start))
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            files = {"tokens": _save_array(folder / f"{split}.tokens.npy", np.concatenate(parts).astype(dtype)),
                     "offsets": _save_array(folder / f"{split}.offsets.npy", offsets),
                     "labels": _save_array(folder / f"{split}.labels.npy", data.labels.numpy().astype(np.int64))}
            info = {"n_rows": len(data), "n_tokens": int(offsets[-1]),
                    "n_unk": int(sum((p == tok.token_to_id("<unk>")).sum() for p in parts))}
        meta["splits"][split] = {"files": files, **info}
    meta["seconds"] = round(time.time() - t0, 2)
    meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _atomic(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
    _remember(folder, _all_files(meta))  # hashed as written: the first load needs no second pass
    if progress:
        print(f"{name}: wrote {folder} (V={V:,}, {meta['seconds']} s)")
    return folder


# --------------------------------------------------------------------------------------------
# load


@dataclass
class PreparedSplit:
    """One prepared split. ``tokens`` (T,) ids (memory-mapped); for AG News also ``offsets``
    (N + 1,) -- row ``i`` is ``tokens[offsets[i]:offsets[i+1]]`` -- and ``labels`` (N,)."""

    name: str
    split: str
    folder: Path
    meta: dict
    tokens: np.ndarray  # (T,)
    offsets: np.ndarray | None = None  # (N + 1,)
    labels: np.ndarray | None = None  # (N,)
    _tok: object = field(default=None, repr=False)

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def n_words(self) -> int | None:
        """Words of a WikiText split (:func:`minimipt.data.count_words`), for perplexity per word."""
        return self.meta["splits"][self.split].get("n_words")

    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` saved beside the arrays (needs the `tokenizers` package)."""
        if self._tok is None:
            self._tok = load_tokenizer(self.folder / "tokenizer.json")
        return self._tok

    def as_tensor(self) -> torch.Tensor:
        """The whole token stream as an int64 tensor (T,)."""
        return torch.from_numpy(np.array(self.tokens, dtype=np.int64))

    def fixed_length(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """AG News rows cut at ``length`` and right-padded: ids (N, L) int64, labels (N,) int64."""
        if self.offsets is None:
            raise ValueError(f"{self.name}/{self.split} is a token stream, not rows; use as_tensor()")
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}")
        start = self.offsets[:-1]  # (N,)
        n = np.minimum(np.diff(self.offsets), length)  # (N,)
        col = np.arange(length)  # (L,)
        keep = col[None, :] < n[:, None]  # (N, L)
        idx = np.where(keep, start[:, None] + col[None, :], 0)
        ids = np.where(keep, np.asarray(self.tokens)[idx], self.meta["pad_id"]).astype(np.int64)
        return torch.from_numpy(ids), torch.from_numpy(np.array(self.labels, dtype=np.int64))


def load_prepared(name: str, split: str, root: str | Path | None = None, *,
                  verify: bool = True) -> PreparedSplit:
    """A split written by :func:`prepare`: ``name`` is the folder name (``wikitext-2``,
    ``ag_news-offline-seed0`` ...), under ``root/prepared/`` (default ``MINIMIPT_DATA`` or ``data``).

    ``verify``: compare the split's arrays and the tokenizer with their sha256 in ``meta.json``
    (remembered per file size and mtime, see :func:`differing_files`); ``False`` checks sizes only.
    A file that differs raises :class:`~minimipt.data.ChecksumError` naming it and the fix."""
    folder = prepared_dir(name, root)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        dataset = name.rsplit("-seed", 1)[0]
        hint = (f"python -m minimipt data prepare {dataset}" if dataset in PREPARE_TARGETS
                else f"python -m minimipt data prepare DATASET  (one of {sorted(PREPARE_TARGETS)})")
        raise FileNotFoundError(f"{folder} holds no complete prepared data (no meta.json: never "
                                f"prepared, or an interrupted prepare). Run `{hint}`.")
    meta = json.loads(meta_path.read_text())
    if meta["config"].get("format") != FORMAT:
        raise ValueError(f"{folder} was prepared in format {meta['config'].get('format')}, this "
                         f"minimipt reads format {FORMAT}; prepare it again with --force")
    if split not in meta["splits"]:
        raise ValueError(f"split={split!r} is not in {folder}; it has {sorted(meta['splits'])}")
    records = [meta["tokenizer"], *meta["splits"][split]["files"].values()]
    if verify:
        bad = differing_files(folder, records)
    else:
        bad = [f["file"] for f in records if not (folder / f["file"]).is_file()
               or (folder / f["file"]).stat().st_size != f["bytes"]]
    if bad:
        raise sources.ChecksumError(f"{folder}: {', '.join(bad)} missing or different from the record in "
                                    f"meta.json (truncated or corrupted); prepare again: `{_prepare_hint(meta)}`")
    arrays = {role: np.load(folder / f["file"], mmap_mode="r") for role, f in meta["splits"][split]["files"].items()}
    return PreparedSplit(name, split, folder, meta, arrays["tokens"], arrays.get("offsets"),
                         arrays.get("labels"))
