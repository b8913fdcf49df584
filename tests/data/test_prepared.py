"""Prepared arrays (minimipt.data.prepared): round trips, idempotence, atomicity, damaged files, errors
that name the fix."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import minimipt.data as D
from minimipt.data import prepared as P
from minimipt.data.tokenizer import encode_fixed

pytest.importorskip("tokenizers")


def test_wikitext_sample_round_trip(data_root):
    folder = D.prepare("wikitext-2-sample", progress=False)
    assert folder == data_root / "prepared" / "wikitext-2-sample"
    for split in ("sample-train", "sample-valid", "sample-test"):
        prep = D.load_prepared("wikitext-2-sample", split)
        assert prep.tokens.dtype == np.uint16 and prep.vocab_size == 2048
        text = D.load_wikitext("wikitext-2", split).text
        assert prep.tokenizer().decode(prep.as_tensor().tolist(), skip_special_tokens=False) == text
        assert prep.n_words == D.count_words(text)


def test_ag_news_sample_round_trip(data_root):
    D.prepare("ag_news-sample", progress=False)
    prep = D.load_prepared("ag_news-sample-seed0", "sample-eval")
    rows = D.load_ag_news("sample-eval")
    assert prep.offsets.shape == (201,) and prep.labels.tolist() == rows.labels.tolist()
    ids, labels = prep.fixed_length(32)
    want, _ = encode_fixed(prep.tokenizer(), rows.texts, 32)
    assert torch.equal(ids, want) and torch.equal(labels, rows.labels)
    assert (ids[prep.offsets[1:] - prep.offsets[:-1] < 32] == 0).any()  # short rows padded with 0


def test_token_stream_has_no_rows(data_root):
    D.prepare("wikitext-2-sample", progress=False)
    with pytest.raises(ValueError, match="as_tensor"):
        D.load_prepared("wikitext-2-sample", "sample-test").fixed_length(8)


def test_prepare_is_idempotent(data_root, capsys):
    folder = D.prepare("ag_news-sample", progress=False)
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    D.prepare("ag_news-sample", progress=True)
    assert "already prepared" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp
    D.prepare("ag_news-sample", split_seed=1, progress=False)  # another draw: its own folder
    assert (data_root / "prepared" / "ag_news-sample-seed1" / "meta.json").is_file()
    D.prepare("ag_news-sample", min_count=3, progress=False)  # other settings: redone
    assert json.loads((folder / "meta.json").read_text())["config"]["tokenizer"]["min_count"] == 3


def test_interrupted_prepare_leaves_nothing_that_looks_valid(data_root, monkeypatch):
    D.prepare("ag_news-sample", progress=False)  # a good earlier version exists
    real, calls = P._save_array, []

    def crash_on_third(path, arr):
        calls.append(path)
        if len(calls) == 3:
            # die half-way through writing the file, like a killed process
            with open(path.with_name(f".{path.name}.tmp-{os.getpid()}"), "wb") as f:
                f.write(b"\x93NUMPY half")
            raise KeyboardInterrupt
        return real(path, arr)

    monkeypatch.setattr(P, "_save_array", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        D.prepare("ag_news-sample", min_count=3, progress=False)
    folder = data_root / "prepared" / "ag_news-sample-seed0"
    assert not (folder / "meta.json").exists()
    with pytest.raises(FileNotFoundError, match="prepare ag_news-sample"):
        D.load_prepared("ag_news-sample-seed0", "sample-train")
    monkeypatch.setattr(P, "_save_array", real)
    D.prepare("ag_news-sample", min_count=3, progress=False)  # a rerun repairs it
    assert not list(folder.glob(".*tmp*"))
    assert len(D.load_prepared("ag_news-sample-seed0", "sample-train").labels) == 600


def test_atomic_write_removes_its_temporary_file(tmp_path):
    def boom(f):
        f.write(b"partial")
        raise OSError("disk full")
    with pytest.raises(OSError):
        P._atomic(tmp_path / "x.npy", boom)
    assert list(tmp_path.iterdir()) == []


def test_damaged_prepared_file_is_refused(data_root):
    folder = D.prepare("ag_news-sample", progress=False)
    with open(folder / "sample-eval.tokens.npy", "ab") as f:
        f.write(b"\0")
    with pytest.raises(D.ChecksumError, match="sample-eval.tokens.npy"):
        D.load_prepared("ag_news-sample-seed0", "sample-eval")
    with pytest.warns(UserWarning, match=r"sample-eval\.tokens\.npy differ"):
        D.prepare("ag_news-sample", progress=False)  # not intact any more: redone
    D.load_prepared("ag_news-sample-seed0", "sample-eval")


def test_prepare_errors_name_the_fix(data_root):
    with pytest.raises(ValueError, match="dataset='imdb'"):
        D.prepare("imdb")
    with pytest.raises(ValueError, match="vocab-size"):
        D.prepare("ag_news-sample", vocab_size=100)
    with pytest.raises(FileNotFoundError, match="ag_news_csv/test.csv"):
        D.prepare("ag_news-offline", src=data_root / "nothing", progress=False)
    with pytest.raises(FileNotFoundError, match="python -m minimipt data prepare wikitext-103"):
        D.load_prepared("wikitext-103", "train")
    D.prepare("wikitext-2-sample", progress=False)
    with pytest.raises(ValueError, match="split='train'"):
        D.load_prepared("wikitext-2-sample", "train")
