"""minimipt.course.runs: statistics over seeds and the summary table, on hand-made rows whose answers are
known (real runs: test_results.py, test_report.py)."""

from __future__ import annotations

import pytest

from minimipt.course.runs import SeedStat, format_stat, render_table
from tests._support import summary_row


def test_seed_stat_formats_one_seed_without_a_spread():
    assert format_stat(SeedStat.of([52.71])) == "52.7 (n=1)"  # never "± 0.0"
    assert SeedStat.of([0.5]).sd is None
    assert format_stat(SeedStat.of([1.0, 1.0, 1.0])) == "1.0000 (all 3 seeds)"
    st = SeedStat.of([0.80, 0.84, 0.82])
    assert format_stat(st) == "0.8200 ± 0.0200 (n=3)" and st.values == (0.80, 0.84, 0.82)
    assert st[0] == st.mean and st[2] == 3  # still indexable as (mean, sd, n)
    with pytest.raises(ValueError, match="at least one"):
        SeedStat.of([])


def test_render_table_says_when_there_is_no_spread():
    one = render_table({"g": [summary_row("A", [0.5]), summary_row("B", [0.6])]})
    assert "one seed per variant: single values, no spread" in one and "± 0.0" not in one
    assert "| held-out accuracy |" in one
    many = render_table({"g": [summary_row("A", [0.5, 0.7])]})
    assert "mean ± sample sd over seeds" in many and "0.6000 ± 0.1414 (n=2)" in many
