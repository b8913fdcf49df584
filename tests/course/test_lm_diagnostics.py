"""minimipt.course.lm_diagnostics: the language models' budget, fit and gap by step on hand-made runs."""

from __future__ import annotations

import math

import pytest

from minimipt.course import lm_diagnostics as diag


def _lm_run(val_ppls, train_losses, steps=300, lr=1e-3):
    history = [{"step": 100 * (i + 1), "train_loss": t, "val": {"ppl_token": p, "loss": math.log(p)}}
               for i, (p, t) in enumerate(zip(val_ppls, train_losses))]
    return {"history": history, "steps": steps, "tokens_per_step": 1000, "config": {"lr": lr},
            "task": {"train_tokens": 50_000}, "params": {"total": 600_000, "non_embedding": 300_000},
            "metrics": {"val": {"loss": math.log(val_ppls[-1])}}}


def test_lm_diagnostics_measure_budget_fit_and_the_gap_by_step():
    runs = {"T": [_lm_run([200, 100, 80], [5.0, 4.4, 4.2]), _lm_run([220, 110, 80], [5.0, 4.5, 4.3])],
            "M": [_lm_run([100, 70, 72], [4.5, 4.0, 3.9])]}
    budget = diag.budget_table(runs)
    assert "| T | 600,000 / 300,000 | 50,000 | 300,000 | 6.0 | 0.50 / 1.00 |" in budget
    rows = [{"variant": "T", "lr": 1e-3, "lrs_tried": [1e-3, 2e-3]}, {"variant": "M", "lr": 2e-3, "lrs_tried": [1e-3, 2e-3]}]
    fit = diag.fit_table(runs, rows)
    assert "| M | 3.900 | 4.277 | +0.377 | 200 of 300 | 0.002 (0.001, 0.002), an edge of the sweep |" in fit
    gaps = diag.gap_by_step(runs, "T")
    assert gaps["T"] == [(100, 1.0), (200, 1.0), (300, 1.0)]
    assert gaps["M"][0] == (100, pytest.approx(100 / 210)) and gaps["M"][-1] == (300, pytest.approx(72 / 80))
    with pytest.raises(ValueError, match="reference"):
        diag.gap_by_step(runs, "absent")
    with pytest.raises(ValueError, match="non-empty"):
        diag.budget_table({"T": []})
