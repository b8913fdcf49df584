"""Checkpoints (minimipt.train.checkpoint): an interrupted write leaves the previous checkpoint, verified
against its recorded hash. Damaged and unreadable checkpoints: tests/test_faults.py."""

from __future__ import annotations

import pytest
import torch

from minimipt.train.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("data_home")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt("interrupted mid-write")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # verified against the hash recorded for step 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "c.pt.sha256"]
