"""Where data files come from (minimipt.data.sources): the bundled samples and their hashes, verified
local files, the hub fallback, and the errors when all fail."""

from __future__ import annotations

import time

import pytest

import minimipt.data as D
from minimipt.data import ag_news, sources


# ------------------------------------------------------------------------- samples and local files

def test_samples_small_and_attributed():
    total = sum(p.stat().st_size for p in sources.SAMPLES_DIR.rglob("*") if p.is_file())
    assert total <= 1_000_000
    readme = (sources.SAMPLES_DIR.parent / "README.md").read_text()
    for needle in ("Zhang", "non-commercial", "CC BY-SA 3.0", "Merity"):
        assert needle in readme


def test_sample_tampering_is_caught(tmp_path, monkeypatch):
    fake = tmp_path / "samples"
    (fake / "wikitext-2-sample").mkdir(parents=True)
    for p in (sources.SAMPLES_DIR / "wikitext-2-sample").iterdir():
        (fake / "wikitext-2-sample" / p.name).write_text(p.read_text() + "x")
    monkeypatch.setattr(sources, "SAMPLES_DIR", fake)
    with pytest.raises(D.ChecksumError, match="wiki.valid.tokens"):
        D.load_wikitext("wikitext-2", "sample-valid")


def test_unknown_hash_is_accepted_with_a_warning(tmp_path):
    path = tmp_path / "wikitext-103" / "wiki.train.tokens"
    path.parent.mkdir()
    path.write_text(" \n = A = \n \n a b c \n")
    with pytest.warns(D.UnverifiedFileWarning, match="wiki.train.tokens"):
        split = D.load_wikitext("wikitext-103", "train", root=tmp_path)
    assert split.n_words == 3 + 3 + 4  # " = A = " and " a b c " have 3 tokens each; 4 lines
    assert "UNVERIFIED" in split.source


def test_minimipt_data_env_is_a_search_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIPT_DATA", str(tmp_path))
    assert sources.search_roots() == [tmp_path, tmp_path / "raw"]
    assert sources.search_roots("/x") == [sources.search_roots("/x")[0]]


# ----------------------------------------------------------------------------- hub and offline

def test_missing_files_offline_fail_fast_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sources, "hub_load", lambda *a: pytest.fail("hub used while offline"))
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        D.load_ag_news("train", root=tmp_path)
    msg = str(err.value)
    assert "ag_news_csv/train.csv" in msg and str(tmp_path) in msg
    assert "python -m minimipt data prepare ag_news --from DIR" in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(FileNotFoundError, match=r"wikitext-103/wiki\.test\.tokens.*prepare wikitext-103"):
        D.load_wikitext("wikitext-103", "test", root=tmp_path)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9", "http://10.255.255.1:9"])
def test_hub_probe_answers_within_seconds_without_offline_flags(monkeypatch, endpoint, tmp_path):
    """No offline flag set: the connection probe itself must fail fast (refused / unroutable)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(sources, "hub_load", lambda *a: pytest.fail("hub used while unreachable"))
    t0 = time.perf_counter()
    status = sources.hub_status(timeout=1.0)
    assert not status and ":9" in status.reason
    with pytest.raises(FileNotFoundError, match="prepare"):
        D.load_wikitext("wikitext-2", "valid", root=tmp_path)
    assert time.perf_counter() - t0 < 10


def test_offline_flags_answer_at_once(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    t0 = time.perf_counter()
    status = sources.hub_status()
    assert not status and "HF_DATASETS_OFFLINE" in status.reason
    assert time.perf_counter() - t0 < 0.5


def test_hub_fallback_when_online(tmp_path, monkeypatch):
    """With files absent and the hub reachable, rows come from `datasets` (faked here)."""
    calls = []
    sample = D.load_wikitext("wikitext-2", "sample-valid").text
    rows = [line if line.strip() else "" for line in sample.splitlines(keepends=True)]

    def fake_load(repo, config, split):
        calls.append((repo, config, split))
        if repo == ag_news.HUB_REPO:
            return {"text": ["a b", "c d"], "label": [3, 0]}
        return {"text": rows}

    monkeypatch.setattr(sources, "hub_status", lambda **kw: sources.HubStatus(True, "faked"))
    monkeypatch.setattr(sources, "hub_load", fake_load)
    got = D.load_ag_news("test", root=tmp_path)
    assert got.texts == ["a b", "c d"] and got.labels.tolist() == [3, 0] and "hub:" in got.source
    with pytest.warns(D.UnverifiedFileWarning):  # the excerpt is not the canonical valid file
        text = D.load_wikitext("wikitext-2", "valid", root=tmp_path)
    assert text.text == sample  # rows reassemble into the file's bytes
    assert calls == [("fancyzhx/ag_news", None, "test"), ("Salesforce/wikitext", "wikitext-2-v1", "validation")]


def test_hub_error_is_reported_as_missing_files(tmp_path, monkeypatch):
    def broken(*a):
        raise ConnectionError("rate limited")
    monkeypatch.setattr(sources, "hub_status", lambda **kw: sources.HubStatus(True, "faked"))
    monkeypatch.setattr(sources, "hub_load", broken)
    with pytest.raises(FileNotFoundError, match="rate limited"):
        D.load_ag_news("train", root=tmp_path)
