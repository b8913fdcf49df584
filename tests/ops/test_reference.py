"""The definitions (minimipt.ops.reference) checked directly; the other tests compare fast forms
against them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minimipt.ops.reference import eligible_mask, write_scores


def test_write_scores_log_space():
    z = torch.randn(2, 5, 8, dtype=torch.float64) * 30  # saturating logits
    log_w = write_scores(F.logsigmoid(z))
    assert torch.isfinite(log_w).all()
    torch.testing.assert_close(log_w.exp(), torch.sigmoid(z).mean(-1))
    assert eligible_mask(log_w, 0.0).all()
    torch.testing.assert_close(eligible_mask(log_w, 0.3), torch.sigmoid(z).mean(-1) >= 0.3)
