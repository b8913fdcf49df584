"""`python -m minimipt.bench scan` on the CPU: rows, extra chunk lengths, argument errors."""

from __future__ import annotations

import argparse
import json

import pytest

from minimipt.bench import scan
from minimipt.course.goals import scan_goals
from minimipt.ops import CHUNK


def _args(tmp_path, **kw):
    parser = argparse.ArgumentParser()
    scan.add_arguments(parser)
    argv = ["--device", "cpu", "--shapes", "1x4x40", "--dtypes", "float32", "--methods", "sequential,chunked",
            "--out", str(tmp_path / "scan.json"), "--commit", "abc"]
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return parser.parse_args(argv)


def test_cpu_run_times_every_chunk_length_and_targets_read_the_default(tmp_path, capsys):
    assert scan.run(_args(tmp_path, chunks="4,16")) == 0
    result = json.loads((tmp_path / "scan.json").read_text())
    chunked = [r for r in result["rows"] if r["method"] == "chunked"]
    assert sorted(r["chunk"] for r in chunked) == sorted({CHUNK, 4, 16})
    assert all(r["rel_err"] < 1e-5 and r["fwd_bwd_ms"] > 0 for r in result["rows"])
    assert "chunked (C=4)" in capsys.readouterr().out
    # the issue-3 target reads the default chunk length's row, whatever the order of the rows
    fake_peer = {"method": "peer", "B": 1, "D": 4, "L": 40, "dtype": "float32", "fwd_ms": 1.0, "fwd_bwd_ms": 1.0}
    default = next(r for r in chunked if r["chunk"] == CHUNK)
    result["rows"] = sorted(chunked, key=lambda r: r["chunk"] == CHUNK) + [fake_peer]
    (goal,) = [g for g in scan_goals(result, shape=(1, 4, 40)) if "chunked" in g["goal"]]
    assert f"{default['fwd_bwd_ms']:.2f} ms" in goal["measured"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="--chunks"):
        scan.run(_args(tmp_path, chunks="1"))
    with pytest.raises(ValueError, match="--adopt-sweep needs --sweep"):
        scan.run(_args(tmp_path, adopt_sweep=True))


def test_adopt_takes_the_fastest_end_to_end_recompute_case(monkeypatch):
    """--adopt-sweep: the rows are timed with the forward and backward configurations of the fastest
    end-to-end recompute case, and only when it beat the defaults."""
    from minimipt.ops.triton import scan as ts

    monkeypatch.setattr(ts, "DEFAULT_CONFIG", (16, 16, 1))
    monkeypatch.setattr(ts, "RECOMPUTE_CONFIG", (16, 8, 1, 0, False))
    monkeypatch.setattr(ts, "BACKWARD", "recompute")

    def e2e(which, fwd, bwd, ms, backward="recompute"):
        return {"backward": backward, "which": which, "fwd_config": list(fwd), "config": list(bwd), "fwd_bwd_ms": ms}
    slower = {"end_to_end": [e2e("default", (16, 16, 1), (16, 8, 1, 0, False), 3.0),
                             e2e("best", (16, 16, 1), (16, 16, 2, 2, False), 3.1)]}
    adopted = scan._adopt(slower)
    assert ts.RECOMPUTE_CONFIG == (16, 8, 1, 0, False) and not adopted
    faster = {"end_to_end": [e2e("default", (16, 16, 1), (16, 8, 1, 0, False), 3.0),
                             e2e("best", (16, 16, 1), (16, 16, 2, 2, False), 2.9),
                             e2e("best_fwd+best", (16, 16, 1, False, False, True, None, True), (16, 16, 2, 2, False), 2.8),
                             e2e("best", (16, 16, 1), (16, 32, 4), 2.0, backward="saved_h")]}  # not a recompute case
    adopted = scan._adopt(faster)
    assert ts.RECOMPUTE_CONFIG == (16, 16, 2, 2, False)
    assert ts.DEFAULT_CONFIG == (16, 16, 1, False, False, True, None, True)
    assert scan._kernel_configs(adopted)["adopted_from_sweep"]
