"""minimipt.course.published: the paper's numbers and the baselines are labelled as such."""

from __future__ import annotations

import math

import pytest

from minimipt.course import results as R


def test_paper_and_baseline_tables_are_labelled():
    for name in R.PAPER:
        assert R.PAPER_LABEL in R.paper_table(name)
    for name in R.BASELINES:
        assert "not runs of minimipt" in R.baselines_table(name)
    assert "0.8805" in R.baselines_table("ag_news") and "0.736" in R.paper_table("ag_news")
    with pytest.raises(ValueError, match="name"):
        R.paper_table("nope")
    with pytest.raises(ValueError, match="name"):
        R.baselines_table("nope")
    series = R.paper_memory_series()
    assert series["paper: MIPT"][16384] == 1600.0 and 16384 not in series["paper: Transformer (naive attention)"]
    assert all(math.isfinite(v) for s in series.values() for v in s.values())


def test_published_lm_references_name_the_model_of_that_dataset():
    # AWD-LSTM (Merity, Keskar & Socher 2017, arXiv 1708.02182, table 2) has 33M parameters on WikiText-2;
    # 24M is its Penn Treebank model
    lm = R.baselines_table("lm")
    assert "| AWD-LSTM (33M) | WikiText-2, word level | 68.6 valid / 65.8 test |" in lm and "24M" not in lm
