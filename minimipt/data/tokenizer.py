"""Tokenizers trained on a training split with Hugging Face ``tokenizers`` (an optional extra).

* :func:`train_bpe` -- byte-level BPE (GPT-2 style): any text encodes, nothing is unknown, and
  ``decode(encode(text)) == text``. Default vocabulary 16,384 for WikiText. Id 0 is ``<pad>``.
* :func:`train_wordlevel` -- a word vocabulary for AG News: lower-cased, the CSV's ``\\``
  (escaped newline) read as a space, split into words and punctuation runs, words seen at least
  ``min_count`` times (2, as in the reference runs). Id 0 is ``<pad>``, id 1 ``<unk>``.
* :func:`encode_fixed` -- a batch of texts to a ``(N, L)`` id tensor, cut at ``L`` and padded
  with the pad id, plus the true lengths.

``tokenizers`` is imported inside these functions, so ``import minimipt.data`` works without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = ["PAD", "UNK", "train_bpe", "train_wordlevel", "encode_fixed", "encode_stream",
           "load_tokenizer", "pad_id"]

PAD, UNK = "<pad>", "<unk>"


def _tokenizers():
    try:
        import tokenizers
    except ImportError as err:
        raise ImportError("minimipt.data tokenizers need the optional `tokenizers` package: "
                          "pip install -e \".[data]\"") from err
    return tokenizers


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_bpe(texts: Iterable[str], vocab_size: int = 16_384, min_frequency: int = 2):
    """Byte-level BPE with ``vocab_size`` entries (256 byte symbols + merges + ``<pad>``)."""
    if not isinstance(vocab_size, int) or vocab_size < 260:
        raise ValueError(f"vocab_size must be an int >= 260 (256 bytes + a few merges), got {vocab_size!r}")
    tk = _tokenizers()
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                     special_tokens=[PAD], show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_batches(texts), trainer=trainer)
    return tok


def train_wordlevel(texts: Iterable[str], min_count: int = 2, max_size: int | None = None):
    """Word-level vocabulary of the words seen at least ``min_count`` times (most frequent first)."""
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    tk = _tokenizers()
    tok = tk.Tokenizer(tk.models.WordLevel(unk_token=UNK))
    tok.normalizer = tk.normalizers.Sequence([
        tk.normalizers.NFKC(), tk.normalizers.Replace("\\", " "), tk.normalizers.Lowercase()])
    tok.pre_tokenizer = tk.pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+
    trainer = tk.trainers.WordLevelTrainer(
        vocab_size=max_size if max_size is not None else 10**9, min_frequency=min_count,
        special_tokens=[PAD, UNK], show_progress=False)
    tok.train_from_iterator(_batches(texts), trainer=trainer)
    return tok


def load_tokenizer(path: str | Path):
    """A tokenizer saved with ``tokenizer.save(path)`` (JSON)."""
    return _tokenizers().Tokenizer.from_file(str(path))


def pad_id(tokenizer) -> int:
    """The id of ``<pad>`` (0 for the tokenizers made here)."""
    idx = tokenizer.token_to_id(PAD)
    if idx is None:
        raise ValueError(f"this tokenizer has no {PAD} token; train it with minimipt.data.tokenizer")
    return idx


def encode_fixed(tokenizer, texts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``texts`` to ``ids`` (N, L) int64, cut at ``L = length`` and right-padded with the
    pad id, and ``lengths`` (N,) int64 (tokens kept, ``<= L``)."""
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.full((len(encodings), length), pad_id(tokenizer), dtype=np.int64)  # (N, L)
    lengths = np.zeros(len(encodings), dtype=np.int64)  # (N,)
    for i, enc in enumerate(encodings):
        row = enc.ids[:length]
        ids[i, :len(row)] = row
        lengths[i] = len(row)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def encode_stream(tokenizer, text: str, chunk_lines: int = 10_000, progress=None) -> np.ndarray:
    """Encode a long text line by line (newlines kept) into one id array (T,) int64.

    Concatenating the pieces decodes back to ``text`` exactly for a byte-level tokenizer.
    ``progress``: an optional callable ``progress(n_lines_done)`` (e.g. ``tqdm.update``).
    """
    lines = text.splitlines(keepends=True)
    parts = []
    for start in range(0, len(lines), chunk_lines):
        chunk = lines[start:start + chunk_lines]
        for enc in tokenizer.encode_batch(chunk, add_special_tokens=False):
            parts.append(np.asarray(enc.ids, dtype=np.int64))
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
