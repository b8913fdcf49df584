"""Tokenizers (minimipt.data.tokenizer): byte-level BPE round trips any text; the word-level one counts
words and pads to a fixed length."""

from __future__ import annotations

import pytest
import torch

from minimipt.data.tokenizer import encode_fixed, encode_stream, train_bpe, train_wordlevel

pytest.importorskip("tokenizers")


def test_bpe_round_trips_any_text():
    texts = ["hello world", " = Title = \n", "naïve café – 東京 🙂", "<unk> @-@ 1 @,@ 000"]
    tok = train_bpe(texts * 20, vocab_size=300)
    assert tok.token_to_id("<pad>") == 0
    for t in texts + ["completely unseen ǂ text\n\n"]:
        ids = encode_stream(tok, t)
        assert tok.decode(ids.tolist(), skip_special_tokens=False) == t


def test_wordlevel_min_count_and_fixed_length():
    texts = ["The cat sat.", "the CAT ran\\away", "a dog"]
    tok = train_wordlevel(texts, min_count=2)
    vocab = tok.get_vocab()
    assert vocab["<pad>"] == 0 and vocab["<unk>"] == 1
    assert set(vocab) == {"<pad>", "<unk>", "the", "cat"}  # words seen at least twice, lower-cased
    ids, lengths = encode_fixed(tok, texts, 4)
    assert ids.shape == (3, 4) and ids.dtype == torch.long
    assert lengths.tolist() == [4, 4, 2]  # "the cat sat ." ; "the cat ran away" (\ is a space)
    assert ids[0].tolist() == [vocab["the"], vocab["cat"], 1, 1]
    assert ids[2].tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="min_count"):
        train_wordlevel(texts, min_count=0)
