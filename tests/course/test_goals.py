"""minimipt.course.goals: each goal decided (reached, not reached, not measured) from hand-made scaling,
scan and recall results whose answers are known."""

from __future__ import annotations

from minimipt.course import results as R
from minimipt.course.goals import grid_goals
from tests._support import RECALL_ROWS


def _scaling(mipt_mem=800.0, speed_ns=(512, 2048, 8192), decode_peaks=(66.7, 66.7)):
    train_rows = []
    for N in speed_ns:
        train_rows += [{"model": "mipt", "N": N, "tokens_per_s": 3 * N, "peak_mb": mipt_mem * N / 8192},
                       {"model": "sdpa", "N": N, "tokens_per_s": N, "peak_mb": 1000.0 * N / 8192},
                       {"model": "naive", "N": N, "oom": True}]
    decode = [{"model": m, "n": n, "ms_per_token": 1.0, "state_mb": 0.002 if m == "mipt" else n / 512,
               "peak_mb": peak if m == "mipt" else 100 + n} for m in ("mipt", "sdpa")
              for n, peak in zip((1, 65536), decode_peaks)]
    return {"benchmark": "scaling", "config": {"d_model": 128, "layers": 2, "batch": 8, "vocab": 256, "amp": "bf16"},
            "train": train_rows, "decode": decode, "hardware": {"gpu": "test"}}


def test_scaling_goals_decide_each_case():
    reached = R.scaling_goals(_scaling(speed_ns=(512, 4096, 8192)))
    assert [t["status"] for t in reached] == ["reached"] * 3
    assert "3.00×" in reached[1]["measured"]
    short_of = R.scaling_goals(_scaling(mipt_mem=1600.0, decode_peaks=(66.7, 90.0)))
    assert [t["status"] for t in short_of] == ["not reached", "not measured", "not reached"]
    assert "4,096 was not in the benchmark" in short_of[1]["measured"] and "8,192: 3.00×" in short_of[1]["measured"]
    short = _scaling()
    short["decode"] = [r for r in short["decode"] if r["n"] == 1]
    assert R.scaling_goals(short)[2]["status"] == "not measured"
    text = R.format_goals(reached)
    assert text.count("— reached (") == 3


def test_scan_goals_compare_with_the_peer_of_the_same_run():
    def row(method, fwd, fb, floor=0.76):
        return {"method": method, "B": 32, "D": 512, "L": 8192, "dtype": "float32", "fwd_ms": fwd,
                "fwd_bwd_ms": fb, "fwd_floor_ms": floor}
    scan = {"rows": [row("chunked", 5.0, 12.0), row("triton", 0.9, 2.8), row("peer", 2.0, 4.3)]}
    status = [t["status"] for t in R.scan_goals(scan)]
    assert status == ["reached"] * 3
    scan = {"rows": [row("chunked", 5.0, 13.5), row("triton", 1.1, 3.4), row("peer", 2.0, 4.3)]}
    assert [t["status"] for t in R.scan_goals(scan)] == ["not reached"] * 3
    assert R.scan_goals({"rows": []})[0]["status"] == "not measured"


def test_scaling_with_cuda_graph_timings():
    s = _scaling(speed_ns=(512, 4096, 8192))
    for r in s["train"]:
        if not r.get("oom"):
            r["ms_per_step"] = 1.0
        if r["model"] == "mipt":
            r.update(graph_ms_per_step=1.0, graph_tokens_per_s=5 * r["N"])
        elif r["model"] == "sdpa":
            r.update(graph_ms_per_step=2.0, graph_tokens_per_s=2 * r["N"])
        else:
            r["graph_error"] = "RuntimeError: capture"
    goals = R.scaling_goals(s)
    assert [t["status"] for t in goals] == ["reached"] * 4
    assert "CUDA graphs" in goals[2]["goal"] and "2.50×" in goals[2]["measured"]
    table = R.scaling_table(s)
    header, rule = [line for line in table.splitlines() if line.startswith("| model")][0], None
    rule = table.splitlines()[table.splitlines().index(header) + 1]
    assert header.count("|") == rule.count("|") == 8 and "CUDA graph tokens/s" in header
    assert "| 20,480 |" in table  # mipt's graph tokens/s at N = 4,096


def test_recall_goal_reads_the_transformers_easiest_cell():
    (goal,) = grid_goals("mqar", RECALL_ROWS)
    assert "L = 128, 8 pairs" in goal["goal"] and goal["status"] == "reached" and goal["measured"] == "0.9950"
    assert grid_goals("mqar", [])[0]["status"] == "not measured"
