"""Data for the course: AG News, WikiText, the needle and recall tasks; tokenizers; prepared token arrays.

Loaders (each returns plain Python/torch objects; see the module docstrings for details)::

    load_ag_news(split, root=None, *, split_seed=0) -> TextClassification
        .texts (list[str]), .labels (N,) int64 in 0..3, .classes, .name (the protocol), .source
        splits: "train", "test"                       the standard protocol (120,000 / 7,600 rows)
                "offline-train", "offline-eval"       OFFLINE protocol: 5,600 / 2,000 rows drawn,
                                                      stratified with split_seed, from the test file
                "sample", "sample-train", "sample-eval"  the 800 bundled rows (600 / 200)
    load_wikitext(name, split, root=None, *, raw=False) -> TextSplit
        name "wikitext-2" | "wikitext-103"; split "train" | "valid" | "test", or the bundled
        WikiText-2 excerpt "sample-train" | "sample-valid" | "sample-test"
        .text (the file's content), .n_words (for perplexity per word), .source
    make_needle_task(n_samples=5000, length=512, n_classes=4, *, n_needles=1, n_distractors=0,
                     needle_range=(0.0, 0.1), n_noise=100, seed=0) -> NeedleTask
        .tokens (N, L) int64, .labels (N,) int64, .vocab (token layout, .size = V), .dataset()
    make_needle_splits(n_train=5000, n_test=1000, seed=0, **kw) -> (train, test)
    make_mqar_task(n_samples=3000, length=256, n_pairs=16, *, vocab_size=8192, power_a=0.01,
                   random_fillers=False, seed=0) -> MQARTask
        multi-query associative recall (Zoology): P key-value pairs, then every key queried once
        .tokens (N, L) int64, .targets (N, L) int64 (the value at each query, -100 elsewhere),
        .keys, .values, .query_pos (N, P), .dataset()

Where files come from (:mod:`minimipt.data.sources`): ``root`` or ``MINIMIPT_DATA`` (default the
repository's ``data/`` and ``data/raw/``), verified against the sha256 manifests in
``data/manifests/``; else Hugging Face ``datasets`` when the hub is reachable; else a
``FileNotFoundError`` naming the files and ``python -m minimipt data prepare DATASET --from DIR``.

Smoke mode: nothing switches silently. Code that must run in smoke mode asks for the bundled
samples by name -- :func:`default_splits` gives ``("sample-train", "sample-eval")`` (AG News) or
``("sample-train", "sample-valid", "sample-test")`` (WikiText-2) when ``minimipt.smoke_mode()``
is on, and the standard splits otherwise.

Tokenizers (:mod:`minimipt.data.tokenizer`, need the ``tokenizers`` extra)::

    train_wordlevel(texts, min_count=2)      # AG News words; <pad>=0, <unk>=1
    encode_fixed(tok, texts, length)         # -> ids (N, L) int64 padded with 0, lengths (N,)
    train_bpe(texts, vocab_size=16384)       # byte-level BPE; <pad>=0; decode(encode(t)) == t

Prepared arrays (``python -m minimipt data prepare DATASET``, :mod:`minimipt.data.prepared`)::

    load_prepared("wikitext-2", "train").as_tensor()            # (T,) int64 token stream
    load_prepared("ag_news-offline-seed0", "offline-train").fixed_length(128)  # ids (N, 128), labels

Licences: AG News is for research and non-commercial use (cite Zhang, Zhao & LeCun 2015);
WikiText is CC BY-SA 3.0 (Merity et al. 2016). See ``data/README.md``.
"""

from __future__ import annotations

from ..env import smoke_mode
from .ag_news import AG_NEWS_CLASSES, AG_NEWS_SPLITS, TextClassification, load_ag_news
from .mqar import MQARTask, make_mqar_task
from .needle import NeedleTask, NeedleVocab, make_needle_splits, make_needle_task
from .prepared import PREPARE_TARGETS, PreparedSplit, load_prepared, prepare
from .sources import ChecksumError, UnverifiedFileWarning, hub_status
from .tokenizer import encode_fixed, load_tokenizer, train_bpe, train_wordlevel
from .wikitext import WIKITEXT_NAMES, WIKITEXT_SPLITS, TextSplit, count_words, load_wikitext

__all__ = [
    "load_ag_news", "load_wikitext", "make_needle_task", "make_needle_splits", "make_mqar_task", "default_splits",
    "count_words", "load_prepared", "prepare", "train_bpe", "train_wordlevel", "encode_fixed",
    "load_tokenizer", "hub_status", "TextClassification", "TextSplit", "NeedleTask", "NeedleVocab", "MQARTask",
    "PreparedSplit", "ChecksumError", "UnverifiedFileWarning", "AG_NEWS_CLASSES", "AG_NEWS_SPLITS",
    "WIKITEXT_NAMES", "WIKITEXT_SPLITS", "PREPARE_TARGETS",
]


def default_splits(dataset: str, smoke: bool | None = None) -> tuple[str, ...]:
    """The splits a notebook should use: the bundled samples in smoke mode, else the standard ones.

    ``dataset``: ``"ag_news"`` -> (train, eval) or ``"wikitext"`` -> (train, valid, test).
    ``smoke`` defaults to :func:`minimipt.smoke_mode`. The offline protocol is never a default:
    ask for ``"offline-train"``/``"offline-eval"`` by name.
    """
    smoke = smoke_mode() if smoke is None else smoke
    if dataset == "ag_news":
        return ("sample-train", "sample-eval") if smoke else ("train", "test")
    if dataset == "wikitext":
        return ("sample-train", "sample-valid", "sample-test") if smoke else ("train", "valid", "test")
    raise ValueError(f"dataset={dataset!r}: use 'ag_news' or 'wikitext'")
