"""Statistics over seeds, the recall grid's capacity checks and the language-model diagnostics, on
hand-made summary rows whose answers are known (the real-run path is in test_viz_results.py)."""

from __future__ import annotations

import math

import pytest
from matplotlib.figure import Figure

from minimipt.course import lm_diagnostics as diag
from minimipt.course import recall
from minimipt.course import viz_results as vr
from minimipt.course.goals import grid_goals
from minimipt.course.runs import SeedStat, format_stat, render_table


def test_seed_stat_formats_one_seed_without_a_spread():
    assert format_stat(SeedStat.of([52.71])) == "52.7 (n=1)"  # never "± 0.0"
    assert SeedStat.of([0.5]).sd is None
    assert format_stat(SeedStat.of([1.0, 1.0, 1.0])) == "1.0000 (all 3 seeds)"
    st = SeedStat.of([0.80, 0.84, 0.82])
    assert format_stat(st) == "0.8200 ± 0.0200 (n=3)" and st.values == (0.80, 0.84, 0.82)
    assert st[0] == st.mean and st[2] == 3  # still indexable as (mean, sd, n)
    with pytest.raises(ValueError, match="at least one"):
        SeedStat.of([])


def _row(variant, values, **extra):
    return {"variant": variant, "seeds": list(range(len(values))), "lr": 1e-3, "lrs_tried": [1e-3],
            "params": {"total": 10, "non_embedding": 5}, "protocol": "p", "hardware": "cpu",
            "eval_accuracy": SeedStat.of(values), **extra}


def test_render_table_says_when_there_is_no_spread():
    one = render_table({"g": [_row("A", [0.5]), _row("B", [0.6])]})
    assert "one seed per variant: single values, no spread" in one and "± 0.0" not in one
    assert "| held-out accuracy |" in one
    many = render_table({"g": [_row("A", [0.5, 0.7])]})
    assert "mean ± sample sd over seeds" in many and "0.6000 ± 0.1414 (n=2)" in many


def test_plot_seeds_shows_every_seed_and_clips_the_interval():
    rows = [_row("near one", [0.99, 1.0, 0.90]), _row("single seed", [0.7])]
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


def _recall_row(model, L, P, acc, k=0, d=64):
    config = {"task": "mqar", "model": model, "cache_slots": k, "seq_len": L, "n_pairs": P, "d_model": d,
              "eval_lengths": [], "extra": {}}
    name = "Transformer (sdpa)" if model == "transformer" else ("MIPT (no cache)" if not k else f"MIPT (cache K={k})")
    return {**_row(f"{name}, L={L}, pairs={P}", [acc]), "config": config}


RECALL = [
    *[_recall_row("transformer", 512, P, 1.0) for P in (8, 32, 128)],
    *[_recall_row("mipt", 512, P, a) for P, a in ((8, 0.99), (32, 0.95), (128, 0.3))],  # D = 64: agrees
    *[_recall_row("mipt", 512, P, a, k=16, d=54) for P, a in ((8, 0.99), (32, 0.97), (128, 0.2))],  # 32 > 16
    *[_recall_row("mipt", 512, P, a, k=64, d=54) for P, a in ((8, 0.2), (32, 0.1), (128, 0.05))],  # none
    _recall_row("transformer", 128, 8, 0.995),
]


def test_capacity_checks_give_a_verdict_per_model_and_length():
    checks = {(c["model"], c["L"]): c for c in recall.capacity_checks(RECALL)}
    assert checks["Transformer (sdpa)", 512]["verdict"] == "agrees"
    assert checks["MIPT (no cache)", 512]["verdict"] == "agrees"
    k16 = checks["MIPT (cache K=16)", 512]
    assert k16["verdict"] == "contradicts" and "[32] pairs (> capacity)" in k16["why"]
    assert checks["MIPT (cache K=64)", 512]["verdict"] == "cannot tell"  # training, not capacity
    assert checks["Transformer (sdpa)", 128]["accuracy"] == {8: 0.995}
    text = recall.format_checks(recall.capacity_checks(RECALL))
    assert "**MIPT (cache K=16)**, L = 512, capacity K = 16 slots (+ D = 54 state channels)" in text
    table = recall.recall_table(RECALL)
    assert "| L = 128, 8 pairs | L = 512, 8 pairs |" in table and "—" in table  # cells a model did not run
    with pytest.raises(ValueError, match="mqar"):
        recall.capacity_checks([_row("not recall", [0.5])])


def test_recall_goal_reads_the_transformers_easiest_cell():
    (goal,) = grid_goals("mqar", RECALL)
    assert "L = 128, 8 pairs" in goal["goal"] and goal["status"] == "reached" and goal["measured"] == "0.9950"
    assert grid_goals("mqar", [])[0]["status"] == "not measured"


def test_plot_recall_one_panel_per_length():
    fig = vr.plot_recall(RECALL)
    assert [ax.get_title() for ax in fig.axes] == ["L = 128", "L = 512"]
    ax = fig.axes[1]
    assert {ln.get_label() for ln in ax.get_lines()} >= {"Transformer (sdpa)", "MIPT (cache K=16)", "1 / pairs"}
    assert sorted(x for ln in ax.get_lines() if ln.get_linestyle() == ":" for x in ln.get_xdata()) == [16, 16, 64, 64]
    with pytest.raises(ValueError, match="mqar"):
        vr.plot_recall([_row("x", [0.5])])


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
