"""minimipt.course.recall: the MQAR grid's capacity checks give a verdict per model and length."""

from __future__ import annotations

import pytest

from minimipt.course import recall
from tests._support import RECALL_ROWS, summary_row


def test_capacity_checks_give_a_verdict_per_model_and_length():
    checks = {(c["model"], c["L"]): c for c in recall.capacity_checks(RECALL_ROWS)}
    assert checks["Transformer (sdpa)", 512]["verdict"] == "agrees"
    assert checks["MIPT (no cache)", 512]["verdict"] == "agrees"
    k16 = checks["MIPT (cache K=16)", 512]
    assert k16["verdict"] == "contradicts" and "[32] pairs (> capacity)" in k16["why"]
    assert checks["MIPT (cache K=64)", 512]["verdict"] == "cannot tell"  # training, not capacity
    assert checks["Transformer (sdpa)", 128]["accuracy"] == {8: 0.995}
    text = recall.format_checks(recall.capacity_checks(RECALL_ROWS))
    assert "**MIPT (cache K=16)**, L = 512, capacity K = 16 slots (+ D = 54 state channels)" in text
    table = recall.recall_table(RECALL_ROWS)
    assert "| L = 128, 8 pairs | L = 512, 8 pairs |" in table and "—" in table  # cells a model did not run
    with pytest.raises(ValueError, match="mqar"):
        recall.capacity_checks([summary_row("not recall", [0.5])])
