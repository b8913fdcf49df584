"""minimipt.course.viz_results: every seed drawn and the interval clipped, log axes where the loss spans
decades, one recall panel per length, and the curves of real runs (the ``grids`` fixture)."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from minimipt.course import results as R
from minimipt.course import viz_results as vr
from tests._support import RECALL_ROWS, summary_row


def test_plot_seeds_shows_every_seed_and_clips_the_interval():
    rows = [summary_row("near one", [0.99, 1.0, 0.90]), summary_row("single seed", [0.7])]
    fig = vr.plot_seeds(rows, "accuracy", references={"chance": 0.25})
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    points = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert [len(ln.get_xdata()) for ln in points] == [3, 1]  # every seed is drawn
    bars = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and ln.get_marker() in ("None", "", None)]
    (bar,) = bars  # one sd bar: the single seed gets none
    st = rows[0]["eval_accuracy"]
    assert st.mean + st.sd > 1.0 and max(bar.get_xdata()) == 1.0  # clipped to the metric's range
    assert ax.get_xlim()[1] <= 1.0 + 0.05
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["near one  (n=3)", "single seed  (n=1)"]


def test_plot_curves_uses_a_log_axis_when_the_loss_spans_decades():
    def run(losses, seed=0):
        return {"config": {"task": "needle", "lr": 1e-3, "seed": seed, "model": "transformer"},
                "history": [{"step": i + 1, "train_loss": v, "val": {"accuracy": 0.5 + 0.1 * i}}
                            for i, v in enumerate(losses)]}
    fig = vr.plot_curves({"falls by decades": [run([1.0, 1e-3, 1e-7]), run([1.0, 1e-2, 1e-6], 1)]})
    ax, ax2 = fig.axes
    assert ax.get_yscale() == "log" and ax2.get_yscale() == "linear" and ax2.get_ylim()[1] <= 1.01
    assert [ln.get_label() for ln in ax.get_lines()][0] == "falls by decades (2 seeds)"
    assert vr.plot_curves({"flat": run([1.0, 0.8, 0.6])}).axes[0].get_yscale() == "linear"


def test_plot_recall_one_panel_per_length():
    fig = vr.plot_recall(RECALL_ROWS)
    assert [ax.get_title() for ax in fig.axes] == ["L = 128", "L = 512"]
    ax = fig.axes[1]
    assert {ln.get_label() for ln in ax.get_lines()} >= {"Transformer (sdpa)", "MIPT (cache K=16)", "1 / pairs"}
    assert sorted(x for ln in ax.get_lines() if ln.get_linestyle() == ":" for x in ln.get_xdata()) == [16, 16, 64, 64]
    with pytest.raises(ValueError, match="mqar"):
        vr.plot_recall([summary_row("x", [0.5])])


def test_plot_curves_inputs(grids):
    _, runs = grids
    one = runs["k4-lr3e-3-s0"]
    for arg in (one, [one, runs["transformer-s0"]], {"a": one}):
        fig = vr.plot_curves(arg)
        assert isinstance(fig, Figure) and fig.axes[1].get_ylabel() == "validation accuracy"
    fig = vr.plot_curves([one, runs["transformer-s0"]])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels[0].startswith("MIPT (cache K=4), lr 0.003, seed 0") and labels[1].startswith("Transformer")
    # a metric absent from the history: the panel says so instead of drawing nothing silently
    fig = vr.plot_curves(one, metric="ppl_word")
    assert not fig.axes[1].axison
    with pytest.raises(ValueError, match="history"):
        vr.plot_curves({"x": {"config": {}}})
    with pytest.raises(ValueError, match="empty"):
        vr.plot_curves([])
    with pytest.raises(ValueError, match="results dict"):
        vr.plot_curves(3)
    with pytest.raises(ValueError, match="empty"):
        vr.plot_seeds([])
    rows = R.grid_report("needle-512", grids[0]).rows
    with pytest.raises(ValueError, match="ppl_token"):
        vr.plot_seeds(rows, "ppl_token")
