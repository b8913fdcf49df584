"""AG News topic classification (Zhang, Zhao & LeCun 2015): 4 classes, labels 0-3.

Splits, named for what they are so that no number can be mistaken for another protocol:

=================  ==========================================================================
``"train"``        the official 120,000 training rows (``ag_news_csv/train.csv``)
``"test"``         the official 7,600 test rows (``ag_news_csv/test.csv``)
``"offline-train"`` **offline protocol**: 5,600 rows (1,400 per class) drawn from the official
                   *test* file, stratified, with ``split_seed`` (0, 1, 2 in the reference runs)
``"offline-eval"`` the 2,000 rows (500 per class) of the same draw, disjoint from offline-train
``"sample"``       the 800 bundled rows (200 per class) in ``data/samples/`` -- smoke mode, tests
``"sample-train"`` 600 of them (150 per class), stratified with ``split_seed``
``"sample-eval"``  the other 200 (50 per class)
=================  ==========================================================================

Results on the offline protocol are *not* comparable with published AG News numbers (those
train on the 120,000 official training rows and test on all 7,600 test rows).

A row's text is ``title + " " + description`` exactly as in the CSV (the HF ``fancyzhx/ag_news``
convention), so local files and the hub give identical texts; the CSV's ``\\`` (an escaped
newline) is left for the tokenizer's normaliser.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import sources

__all__ = ["AG_NEWS_CLASSES", "AG_NEWS_SPLITS", "TextClassification", "load_ag_news",
           "read_ag_news_csv", "stratified_split"]

AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
AG_NEWS_SPLITS = ("train", "test", "offline-train", "offline-eval", "sample", "sample-train",
                  "sample-eval")
OFFLINE_PER_CLASS = (1400, 500)  # 5,600 train / 2,000 eval over 4 classes
SAMPLE_PER_CLASS = (150, 50)  # 600 / 200
SAMPLE_FILE = "ag_news_sample.csv"
HUB_REPO = "fancyzhx/ag_news"
PREPARE_HINT = "python -m minimipt data prepare ag_news --from DIR"


@dataclass
class TextClassification:
    """Texts with integer labels. ``labels``: (N,) int64 in ``[0, C)``; ``classes[c]`` names class c."""

    texts: list[str]
    labels: torch.Tensor  # (N,)
    classes: tuple[str, ...]
    name: str  # the protocol, e.g. "ag_news/offline-train (split_seed=0)"
    source: str  # where the rows came from (file and its verification, or the hub)

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return f"TextClassification({self.name}: {len(self)} rows, per class {counts}; {self.source})"


def read_ag_news_csv(path: str | Path) -> tuple[list[str], list[int]]:
    """Parse an AG News CSV (no header; class 1-4, title, description) into texts and labels 0-3."""
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, quotechar='"', delimiter=",", quoting=csv.QUOTE_ALL,
                                           skipinitialspace=True), 1):
            if len(row) != 3 or row[0] not in ("1", "2", "3", "4"):
                raise ValueError(f"{path}:{n}: expected 3 columns (class 1-4, title, description), "
                                 f"got {row[:3]!r}; is this an AG News CSV?")
            labels.append(int(row[0]) - 1)
            texts.append(" ".join((row[1], row[2])))
    return texts, labels


def stratified_split(labels, per_class: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint index sets with ``per_class[0]`` and ``per_class[1]`` rows of every class.

    One ``numpy.random.default_rng(seed)`` permutes each class's rows in turn (classes in
    increasing order); the first ``per_class[0]`` go to the first set, the next ``per_class[1]``
    to the second. Both index arrays are returned sorted (file order).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"split_seed must be a non-negative int, got {seed!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(int(seed))
    first, second = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < sum(per_class):
            raise ValueError(f"class {c} has {len(rows)} rows, fewer than the {sum(per_class)} "
                             "a stratified split of this size needs")
        rows = rows[rng.permutation(len(rows))]
        first.append(rows[:per_class[0]])
        second.append(rows[per_class[0]:sum(per_class)])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def _subset(texts, labels, idx) -> tuple[list[str], list[int]]:
    return [texts[i] for i in idx], [labels[i] for i in idx]


def _canonical(file_split: str, root) -> tuple[list[str], list[int], str]:
    """Rows of the official ``train`` or ``test`` file: local verified file, else the hub."""
    key = f"ag_news_csv/{file_split}.csv"
    found = sources.find_files([key], root)
    if found is not None:
        texts, labels = read_ag_news_csv(found[key])
        return texts, labels, sources.describe(found[key], key)
    hub = sources.hub_status(repo=HUB_REPO)
    what = f"AG News split {file_split!r}"
    if not hub:
        raise sources.missing_files_error(what, [key], root, hub, PREPARE_HINT)
    try:
        rows = sources.hub_load(HUB_REPO, None, file_split)
    except Exception as err:  # network or hub failure: say what we tried
        raise sources.missing_files_error(what, [key], root, hub, PREPARE_HINT, err) from err
    return list(rows["text"]), [int(x) for x in rows["label"]], f"hub:{HUB_REPO} ({file_split})"


def load_ag_news(split: str, root: str | Path | None = None, *, split_seed: int = 0) -> TextClassification:
    """AG News rows for ``split`` (see the module docstring for the split names).

    ``root``: a folder holding ``ag_news_csv/{train,test}.csv`` (``ag_news/`` also accepted); by
    default ``MINIMIPT_DATA`` or the repository's ``data/``, then the hub (see
    :mod:`minimipt.data.sources`). ``split_seed`` picks the stratified draw of the ``offline-*``
    and ``sample-*`` splits. The ``sample*`` splits always read the bundled file and take no root.
    """
    if split not in AG_NEWS_SPLITS:
        raise ValueError(f"split={split!r} is not an AG News split; use one of {AG_NEWS_SPLITS}")
    if split.startswith("sample"):
        if root is not None:
            raise ValueError(f"split={split!r} reads the bundled sample in {sources.SAMPLES_DIR}; "
                             "drop root= (or ask for 'train'/'test'/'offline-*' from root)")
        path = sources.SAMPLES_DIR / SAMPLE_FILE
        sources.verify_file(path, f"samples/{SAMPLE_FILE}")
        texts, labels = read_ag_news_csv(path)
        source = f"{path} (bundled sample, sha256 checked)"
        per_class, seeded = SAMPLE_PER_CLASS, split != "sample"
    elif split.startswith("offline"):
        texts, labels, source = _canonical("test", root)
        per_class, seeded = OFFLINE_PER_CLASS, True
    else:
        texts, labels, source = _canonical(split, root)
        seeded = False
    name = f"ag_news/{split}"
    if seeded:
        first, second = stratified_split(labels, per_class, split_seed)
        texts, labels = _subset(texts, labels, first if split.endswith("-train") else second)
        name += f" (split_seed={split_seed})"
    return TextClassification(texts, torch.tensor(labels, dtype=torch.long), AG_NEWS_CLASSES, name,
                              source)
