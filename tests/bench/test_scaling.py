"""`python -m minimipt.bench scaling` on the CPU: the models it builds, the CUDA-graph timings in
their own process, and a live run whose results file the course reads."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from minimipt import MIPTLM
from minimipt.course import results as R
from minimipt.course import viz_results as vr


def test_models_pass_fused_mixer():
    from minimipt.bench.scaling import _models

    lm = _models(["mipt-fused"], 16, 2, 64)["mipt-fused"]()
    assert isinstance(lm, MIPTLM) and all(b.mixer.fused_mixer for b in lm.blocks)
    assert not any(b.mixer.fused_mixer for b in _models(["mipt"], 16, 2, 64)["mipt"]().blocks)


def test_graph_timings_run_in_their_own_process_and_stop_after_a_failed_capture():
    """Each model's CUDA-graph series runs in a spawned process, so a failed capture (here: there is
    no CUDA device, so every capture fails) cannot poison the benchmark's own process; the lengths
    after the failure are skipped, not attempted."""
    from minimipt.bench import scaling

    p = argparse.ArgumentParser()
    scaling.add_arguments(p)
    args = p.parse_args(["--batch", "1", "--repeats", "1", "--d-model", "16", "--layers", "1"])
    rows = scaling._graph_points(["mipt"], args, [8, 16], 17, torch.device("cpu"))
    assert "graph_error" in rows[("mipt", 8)] and rows[("mipt", 16)]["graph_skipped"]
    assert torch.randint(0, 2, (1,)).numel() == 1  # this process's generators are untouched


def test_live_cpu_scaling_benchmark(tmp_path):
    from minimipt.bench import scaling

    p = argparse.ArgumentParser()
    scaling.add_arguments(p)
    out = tmp_path / "scaling_cpu.json"
    args = p.parse_args(["--lengths", "16,32", "--decode-lengths", "1,8", "--batch", "1", "--repeats", "1",
                         "--models", "mipt,sdpa", "--d-model", "16", "--layers", "1", "--out", str(out)])
    assert scaling.run(args) == 0
    s = R.load_scaling(out)
    assert s["file"] == "scaling_cpu.json" and {r["N"] for r in s["train"]} == {16, 32}
    mem, speed = R.scaling_goals(s)[:2]
    assert mem["status"] == "not measured" and speed["status"] == "not measured"
    fig = vr.plot_training_scaling(s)
    assert not fig.axes[0].axison and len(fig.axes[1].get_lines()) == 2  # no CUDA: memory panel says so
    assert "—" in R.scaling_table(s)
    # the CPU demo: state sizes only, no timings
    demo = R.scaling_table(s, timings=False)
    assert "ms /" not in demo and "tokens/s" not in demo and "| state MB |" in demo
    assert len(vr.plot_decode_scaling(s, latency=False).axes) == 1
    (tmp_path / "other.json").write_text(json.dumps({"benchmark": "scan"}))
    with pytest.raises(ValueError, match="not a scaling benchmark"):
        R.load_scaling(tmp_path / "other.json")
    assert R.load_scaling(tmp_path / "absent.json") is None
    with pytest.raises(ValueError, match="scaling benchmark"):
        vr.plot_decode_scaling({"train": []})
