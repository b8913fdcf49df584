"""The experiment runner: a learning-rate sweep on seed 0, then the other seeds at the best rate."""

from __future__ import annotations

import json

import pytest

from minimipt.course import experiments
from minimipt.course.runs import load_runs, summarise


@pytest.mark.slow
def test_sweep_then_seeds_at_the_best_lr(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIPT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MINIMIPT_DEVICE", "cpu")
    grid = lambda: experiments._runs("t", "needle", "smoke", {"mipt": {"model": "mipt"}}, lrs=(1e-4, 3e-3),
                                     seeds=(0, 1), sweep_seeds=(0,))
    monkeypatch.setitem(experiments.GRIDS, "tiny", grid)
    rc = experiments.main(["tiny", "--results", str(tmp_path / "res"), "--parallel", "2",
                           "--set", "max_steps=12", "--set", "eval_every=6"])
    assert rc == 0
    folder = tmp_path / "res" / "tiny"
    vals = {lr: json.loads((folder / f"mipt-lr{lr:g}-s0" / "results.json").read_text())["metrics"]["val"]["accuracy"]
            for lr in (1e-4, 3e-3)}
    best = max(vals, key=vals.get)
    final = folder / f"mipt-lr{best:g}-s1" / "results.json"
    assert final.exists() and json.loads(final.read_text())["complete"]
    row = summarise(load_runs(tmp_path / "res"))["tiny"][0]
    assert row["lr"] == best and row["seeds"] == [0, 1]
    # a second call finds everything done and runs nothing
    assert experiments.main(["tiny", "--results", str(tmp_path / "res")]) == 0


def test_gpus_are_parsed_and_filled_evenly():
    assert experiments._parse_gpus(None) == []
    assert experiments._parse_gpus("0, 2") == ["0", "2"]
    try:
        experiments._parse_gpus("cuda:0")
    except ValueError as e:
        assert "--gpus" in str(e)
    else:
        raise AssertionError("a bad --gpus value must raise ValueError")
    in_use = []
    for _ in range(5):
        in_use.append(experiments._least_busy(["0", "1"], in_use))
    assert in_use == ["0", "1", "0", "1", "0"]


def test_recall_cells_take_the_rate_their_models_chose_at_the_sweep_cell(tmp_path):
    """The mqar grid sweeps the learning rate at one cell; every other cell of the same model runs at the
    rate that won there on validation, and waits until that sweep is finished."""
    grid = experiments.expand("mqar")
    sweep = [r for r in grid if r["stage"] == "sweep"]
    finals = [r for r in grid if r["stage"] == "final"]
    L0, P0 = experiments.MQAR_SWEEP_CELL
    assert {(r["set"]["seq_len"], r["set"]["n_pairs"]) for r in sweep} == {(L0, P0)}
    assert {(r["set"]["seq_len"], r["set"]["n_pairs"]) for r in finals} == set(experiments.MQAR_CELLS)
    assert all(r["set"]["batch_size"] * r["set"]["seq_len"] == experiments.MQAR_TOKENS_PER_STEP for r in grid)
    assert [r for r in experiments._resolve_finals(grid, tmp_path) if r["stage"] == "final"] == []  # sweep not run
    for r in sweep:  # write finished sweep results: the larger rate wins for the Transformer only
        won = r["set"]["lr"] == max(experiments.MQAR_LRS) if r["variant"].startswith("transformer") else \
            r["set"]["lr"] == min(experiments.MQAR_LRS)
        out = tmp_path / r["name"]
        out.mkdir()
        (out / "results.json").write_text(json.dumps({"complete": True, "metrics": {"val": {"accuracy": 0.9 if won else 0.5}}}))
    resolved = [r for r in experiments._resolve_finals(grid, tmp_path) if r["stage"] == "final"]
    assert len(resolved) == len(finals)
    for r in resolved:
        want = max(experiments.MQAR_LRS) if r["variant"].startswith("transformer") else min(experiments.MQAR_LRS)
        assert r["set"]["lr"] == want and r["name"] == f"{r['variant']}-lr{want:g}-s0"


def test_a_failed_run_is_reported_not_relaunched_and_a_run_without_checkpoint_restarts(tmp_path):
    run = {"name": "r", "task": "needle", "preset": "smoke", "seed": 0, "set": {"model": "mipt"}}
    out = tmp_path / "r"
    out.mkdir()
    assert experiments._status(out) == "todo" and "--overwrite" not in experiments._command(run, out, None, [])
    (out / "results.json").write_text(json.dumps({"complete": False, "steps": 3}))
    assert experiments._status(out) == "todo" and "--overwrite" in experiments._command(run, out, None, [])
    (out / "checkpoint.pt").write_bytes(b"")
    assert experiments._status(out) == "partial" and "--resume" in experiments._command(run, out, None, [])
    (out / "results.json").write_text(json.dumps({"complete": False, "failed": "loss is nan at step 3"}))
    assert experiments._status(out) == "failed"
