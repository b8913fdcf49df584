"""The token embedding's checks (minimipt.embedding)."""

from __future__ import annotations

import pytest
import torch

V = 37


def test_token_range_check_is_skipped_only_under_graph_capture(monkeypatch):
    """The id-range check syncs with the host, which a CUDA graph capture forbids: it is skipped
    while capturing; the other checks still run."""
    from minimipt import embedding
    with pytest.raises(ValueError, match="vocab_size"):
        embedding.check_tokens(torch.tensor([[1, V]]), V)
    monkeypatch.setattr(embedding, "_capturing", lambda t: True)
    embedding.check_tokens(torch.tensor([[1, V]]), V)  # not checked: would need a host sync
    with pytest.raises(ValueError, match="integer"):
        embedding.check_tokens(torch.zeros(2, 3), V)
