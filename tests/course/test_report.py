"""The results report (minimipt.course.report) built from real training runs: the table, the figure,
and runs that did not finish named under their table."""

from __future__ import annotations

import json

import pytest

from minimipt.train import make_config, train
from tests._support import SMALL_SPLITS

pytestmark = pytest.mark.usefixtures("data_home")


def test_report_builds_table_from_results(tmp_path):
    from minimipt.course.report import write_report
    from minimipt.course.runs import load_runs, render_table, summarise, unfinished_runs

    for seed in (0, 1):
        for lr in (1e-3, 3e-3):
            train(make_config("needle", "smoke", seed=seed, lr=lr, epochs=1, **SMALL_SPLITS),
                  tmp_path / "res" / "needle-smoke" / f"s{seed}-lr{lr}", progress=False)
    summary = summarise(load_runs(tmp_path / "res"))
    row = summary["needle-smoke"][0]
    assert row["seeds"] == [0, 1] and row["lrs_tried"] == [1e-3, 3e-3]
    text = render_table(summary)
    assert "needle-smoke" in text and "MIPT (no cache)" in text
    written = write_report(tmp_path / "res", tmp_path / "docs" / "results.md")
    doc = written[0].read_text()
    assert "MIPT (no cache)" in doc and "![needle-smoke](figures/needle-smoke.png)" in doc
    assert written[1] == tmp_path / "docs" / "figures" / "needle-smoke.png" and written[1].stat().st_size > 0
    # a run whose call ran out of time is named under its table, not averaged into it
    cut = tmp_path / "res" / "needle-smoke" / "s2-lr0.001"
    cut.mkdir()
    (cut / "results.json").write_text(json.dumps({"complete": False, "steps": 3, "total_steps": 10}))
    assert unfinished_runs(tmp_path / "res") == {"needle-smoke": ["s2-lr0.001 (3/10 steps)"]}
    assert summarise(load_runs(tmp_path / "res")) == summary
    assert "Not finished, left out of this table: s2-lr0.001 (3/10 steps)." in render_table(
        summary, unfinished_runs(tmp_path / "res"))
