"""AG News (minimipt.data.ag_news): the bundled sample's splits, the offline protocol drawn from a
verified local file, and a local file that is not the canonical one."""

from __future__ import annotations

import csv

import pytest
import torch

import minimipt.data as D
from minimipt.data import sources


@pytest.fixture
def fake_manifest(tmp_path, monkeypatch):
    """Point the manifests at a temporary folder; ``add(key, path)`` records a file's real hash."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "samples.sha256").write_text((sources.MANIFEST_DIR / "samples.sha256").read_text())
    monkeypatch.setattr(sources, "MANIFEST_DIR", folder)

    def add(key, path):
        with open(folder / "fake.sha256", "a") as f:
            f.write(f"{sources.sha256_file(path)}  {key}\n")
    return add


def _write_ag_csv(path, per_class=1900):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        for i in range(per_class):
            for c in (1, 2, 3, 4):
                w.writerow([str(c), f"title {c} {i}", f"body \\ of row {i}, class {c}"])


def test_ag_news_sample_splits_are_balanced_disjoint_and_seeded():
    full = D.load_ag_news("sample")
    assert len(full) == 800 and torch.bincount(full.labels).tolist() == [200] * 4
    tr, ev = D.load_ag_news("sample-train"), D.load_ag_news("sample-eval")
    assert len(tr) == 600 and len(ev) == 200
    assert torch.bincount(tr.labels).tolist() == [150] * 4 and torch.bincount(ev.labels).tolist() == [50] * 4
    assert not set(tr.texts) & set(ev.texts)
    assert sorted(tr.texts + ev.texts) == sorted(full.texts)
    again = D.load_ag_news("sample-train")
    assert again.texts == tr.texts and torch.equal(again.labels, tr.labels)
    other = D.load_ag_news("sample-train", split_seed=1)
    assert other.texts != tr.texts
    assert "split_seed=0" in tr.name and "sample" in tr.name
    assert tr.classes == ("World", "Sports", "Business", "Sci/Tech")


def test_checksum_mismatch_names_the_file(tmp_path):
    bad = tmp_path / "ag_news_csv" / "test.csv"
    _write_ag_csv(bad, per_class=3)  # not the canonical bytes
    with pytest.raises(D.ChecksumError, match=r"ag_news_csv/test\.csv") as err:
        D.load_ag_news("test", root=tmp_path)
    assert str(bad) in str(err.value) and "521465c2" in str(err.value)


def test_offline_protocol_from_a_verified_root(tmp_path, fake_manifest):
    path = tmp_path / "ag_news" / "test.csv"  # the alias folder name is accepted too
    _write_ag_csv(path)
    fake_manifest("ag_news_csv/test.csv", path)
    tr = D.load_ag_news("offline-train", root=tmp_path)
    ev = D.load_ag_news("offline-eval", root=tmp_path)
    assert (len(tr), len(ev)) == (5600, 2000)
    assert torch.bincount(tr.labels).tolist() == [1400] * 4 and torch.bincount(ev.labels).tolist() == [500] * 4
    assert not set(tr.texts) & set(ev.texts)
    assert "offline-train" in tr.name and "offline" in ev.name
    tr1 = D.load_ag_news("offline-train", root=tmp_path, split_seed=1)
    assert tr1.texts != tr.texts
    # the text is "title description" and labels 0-3 follow the class column 1-4
    assert all(t.startswith(f"title {y + 1} ") for t, y in zip(tr.texts, tr.labels.tolist()))
