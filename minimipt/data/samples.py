"""How the bundled samples in ``data/samples/`` were derived from the canonical files.

``build_samples(src, out)`` is deterministic: given the canonical AG News test file and the
WikiText-2 ``.tokens`` files it rewrites byte-identical samples (their hashes are in
``data/manifests/samples.sha256``). Command line: ``python -m minimipt data make-samples --from DIR``.

* AG News: 200 rows of each class of the official test file, chosen with
  ``numpy.random.default_rng(0)`` (one permutation per class, classes in order), written verbatim
  in file order (800 rows).
* WikiText-2: the first whole articles of each split file that fit a byte budget
  (train 300 kB, valid 60 kB, test 60 kB), cut at the blank line before an article title.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from . import sources
from .ag_news import SAMPLE_FILE, read_ag_news_csv
from .wikitext import SAMPLE_DIR

__all__ = ["build_samples", "article_starts", "SAMPLE_BUDGETS"]

AG_NEWS_SAMPLE_PER_CLASS = 200
SAMPLE_BUDGETS = {"train": 300_000, "valid": 60_000, "test": 60_000}
_TITLE = re.compile(r"^ = [^=].* = $")


def article_starts(lines: list[str]) -> list[int]:
    """Indices of the blank line that precedes each top-level ``" = Title = "`` line."""
    return [i - 1 for i in range(1, len(lines)) if _TITLE.match(lines[i].rstrip("\n")) and not lines[i - 1].strip()]


def _wikitext_excerpt(text: str, budget: int) -> str:
    lines = text.splitlines(keepends=True)
    cuts = article_starts(lines)[1:] + [len(lines)]  # end of article k = start of article k+1
    size, best = 0, cuts[0]
    ends = np.cumsum([len(x.encode("utf-8")) for x in lines])
    for cut in cuts:
        size = int(ends[cut - 1])
        if size > budget:
            break
        best = cut
    return "".join(lines[:best])


def build_samples(src: str | Path, out: str | Path) -> dict[str, str]:
    """Write the samples under ``out`` from canonical files under ``src``; return their sha256s."""
    src, out = Path(src), Path(out)
    keys = ["ag_news_csv/test.csv"] + [f"wikitext-2/wiki.{s}.tokens" for s in SAMPLE_BUDGETS]
    found = sources.find_files(keys, src)
    if found is None:
        raise FileNotFoundError(f"build_samples needs {keys} under {src}")
    raw_lines = found["ag_news_csv/test.csv"].read_bytes().decode("utf-8").splitlines(keepends=True)
    _, labels = read_ag_news_csv(found["ag_news_csv/test.csv"])
    if len(raw_lines) != len(labels):
        raise ValueError("AG News test.csv has a multi-line row; cannot sample lines verbatim")
    labels = np.asarray(labels)
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([
        np.flatnonzero(labels == c)[rng.permutation(int((labels == c).sum()))[:AG_NEWS_SAMPLE_PER_CLASS]]
        for c in range(4)]))
    written = {f"samples/{SAMPLE_FILE}": "".join(raw_lines[i] for i in keep)}
    for split, budget in SAMPLE_BUDGETS.items():
        text = found[f"wikitext-2/wiki.{split}.tokens"].read_text(encoding="utf-8")
        written[f"samples/{SAMPLE_DIR}/wiki.{split}.tokens"] = _wikitext_excerpt(text, budget)
    hashes = {}
    for key, text in written.items():
        path = out / key.removeprefix("samples/")
        path.parent.mkdir(parents=True, exist_ok=True)
        with io.open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        hashes[key] = sources.sha256_file(path)
    return hashes
