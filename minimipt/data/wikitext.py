"""WikiText-2 and WikiText-103 (Merity et al. 2016, CC BY-SA 3.0) as plain text.

``load_wikitext(name, split)`` returns a split's text exactly as in the canonical file
(``wikitext-2/wiki.train.tokens`` ...; ``raw=True`` reads ``wikitext-2-raw/wiki.train.raw``).
WikiText-2 and WikiText-103 share their valid and test articles; WikiText-2 train is a 2% subset
of WikiText-103 train.

Splits: ``"train"``, ``"valid"``, ``"test"``; and the bundled excerpt of WikiText-2 (a few whole
articles of each split, in ``data/samples/``) as ``"sample-train"``, ``"sample-valid"``,
``"sample-test"`` for smoke mode and tests.

**Offline protocol** (``"wikitext-2"`` train, shared valid/test): train on WikiText-2 train,
validate on valid, report on test -- state it wherever results appear; it is not the
WikiText-103 benchmark.

Perplexity per word: ``exp(total NLL / count_words(text))``, where :func:`count_words` counts
whitespace-separated tokens plus one end-of-line per line -- the token count of the standard
word-level benchmark (245,569 for WikiText-2 test), since a model of the text also predicts
every newline.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import sources

__all__ = ["WIKITEXT_NAMES", "WIKITEXT_SPLITS", "TextSplit", "load_wikitext", "count_words"]

WIKITEXT_NAMES = ("wikitext-2", "wikitext-103")
WIKITEXT_SPLITS = ("train", "valid", "test", "sample-train", "sample-valid", "sample-test")
SAMPLE_DIR = "wikitext-2-sample"
HUB_REPO = "Salesforce/wikitext"
_HUB_SPLIT = {"train": "train", "valid": "validation", "test": "test"}


def count_words(text: str, eos_per_line: bool = True) -> int:
    """Words for per-word perplexity: whitespace tokens, plus one per line if ``eos_per_line``."""
    return len(text.split()) + (text.count("\n") if eos_per_line else 0)


@dataclass
class TextSplit:
    """One split of a text corpus. ``text`` is the file's content, lines joined by ``\\n``."""

    text: str
    name: str  # e.g. "wikitext-2/test"
    source: str

    @property
    def n_words(self) -> int:
        """:func:`count_words` of the text (the denominator of perplexity per word)."""
        return count_words(self.text)

    def __repr__(self) -> str:
        return f"TextSplit({self.name}: {len(self.text):,} chars, {self.n_words:,} words; {self.source})"


def _key(name: str, split: str, raw: bool) -> str:
    return f"{name}-raw/wiki.{split}.raw" if raw else f"{name}/wiki.{split}.tokens"


def load_wikitext(name: str, split: str, root: str | Path | None = None, *, raw: bool = False) -> TextSplit:
    """The text of WikiText ``name`` (``"wikitext-2"``/``"wikitext-103"``), ``split``.

    ``root``: a folder holding ``wikitext-2/wiki.{train,valid,test}.tokens`` (or
    ``wikitext-2-raw/wiki.*.raw`` with ``raw=True``); by default ``MINIMIPT_DATA`` or the repository's
    ``data/``, then the hub (``Salesforce/wikitext``), see :mod:`minimipt.data.sources`.
    """
    if name not in WIKITEXT_NAMES:
        raise ValueError(f"name={name!r} is not a WikiText corpus; use one of {WIKITEXT_NAMES}")
    if split not in WIKITEXT_SPLITS:
        raise ValueError(f"split={split!r} is not a WikiText split; use one of {WIKITEXT_SPLITS}")
    if split.startswith("sample"):
        if name != "wikitext-2" or raw or root is not None:
            raise ValueError(f"split={split!r} is the bundled WikiText-2 excerpt: call "
                             f"load_wikitext('wikitext-2', {split!r}) without root= or raw=")
        base = split.removeprefix("sample-")
        path = sources.SAMPLES_DIR / SAMPLE_DIR / f"wiki.{base}.tokens"
        sources.verify_file(path, f"samples/{SAMPLE_DIR}/wiki.{base}.tokens")
        return TextSplit(path.read_text(encoding="utf-8"), f"{name}/{split}",
                         f"{path} (bundled excerpt, sha256 checked)")
    key = _key(name, split, raw)
    found = sources.find_files([key], root)
    if found is not None:
        return TextSplit(found[key].read_text(encoding="utf-8"), f"{name}/{split}" + ("-raw" if raw else ""),
                         sources.describe(found[key], key))
    hub = sources.hub_status(repo=HUB_REPO)
    what = f"WikiText {name!r} split {split!r}"
    prepare = f"python -m minimipt data prepare {name} --from DIR"
    if not hub:
        raise sources.missing_files_error(what, [key], root, hub, prepare)
    config = f"{name}-raw-v1" if raw else f"{name}-v1"
    try:
        rows = sources.hub_load(HUB_REPO, config, _HUB_SPLIT[split])
    except Exception as err:
        raise sources.missing_files_error(what, [key], root, hub, prepare, err) from err
    # The hub stores one row per line, newline kept, blank lines (" \n" in the file) as "".
    text = "".join(row if row else " \n" for row in rows["text"])
    want = sources.known_hashes().get(key)
    got = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if want is not None and got != want:
        warnings.warn(f"{what} from hub:{HUB_REPO}/{config}: reassembled text differs from the "
                      f"canonical file {key} (sha256 {got} != {want}); token counts may differ "
                      "slightly from the published ones.", sources.UnverifiedFileWarning, stacklevel=2)
    status = "matches" if got == want else "unverified against"
    return TextSplit(text, f"{name}/{split}" + ("-raw" if raw else ""),
                     f"hub:{HUB_REPO}/{config} ({status} the canonical sha256)")
