"""`python -m minimipt.bench scan` on the CPU: rows, extra chunk lengths, argument errors, and how the Triton
rows and the sweep pass their configurations."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

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
    with pytest.raises(ValueError, match="--forward: '16,16,1' is not BLOCK_L,BLOCK_D,NUM_WARPS,PREFETCH"):
        scan.run(_args(tmp_path, forward="16,16,1"))
    with pytest.raises(ValueError, match="--backward.*PREFETCH 0 or 1"):
        scan.run(_args(tmp_path, backward="16,32,4,yes"))
    with pytest.raises(ValueError, match="BackwardConfig.block_d must be a power of two"):
        scan.run(_args(tmp_path, backward="16,24,4,1"))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="under the interpreter the CPU runs Triton")
def test_sweep_needs_the_kernels(tmp_path):
    with pytest.raises(ValueError, match="--sweep needs the Triton kernels"):
        scan.run(_args(tmp_path, sweep=True))


def test_the_sweep_names_its_configurations_and_leaves_the_defaults_alone():
    """The sweep's configurations are explicit values (the defaults first); nothing in the package changes."""
    from minimipt.ops.triton.scan import DEFAULT_BACKWARD, DEFAULT_FORWARD, BackwardConfig, ForwardConfig

    assert scan.SWEEP_FORWARD[0] == DEFAULT_FORWARD and scan.SWEEP_BACKWARD[0] == DEFAULT_BACKWARD
    assert all(type(c) is ForwardConfig for c in scan.SWEEP_FORWARD)
    assert all(type(c) is BackwardConfig for c in scan.SWEEP_BACKWARD)
    assert len(set(scan.SWEEP_FORWARD)) == len(scan.SWEEP_FORWARD) and len(set(scan.SWEEP_BACKWARD)) == len(scan.SWEEP_BACKWARD)


def test_triton_rows_and_sweep_pass_their_configurations(tmp_path, monkeypatch):
    """The "triton" rows call scan_triton with --forward / --backward (the defaults where not given), the
    sweep with each of its configurations, as arguments; the results file records them. A stand-in for
    the kernels (the chunked scan, which records its arguments) runs them on the CPU."""
    import minimipt.ops.triton as K
    from minimipt.ops import scan_chunked
    from minimipt.ops.checks import pairs_to_complex
    from minimipt.ops.triton import scan as ts

    calls = []

    def stand_in(p, theta, u, h0=None, *, forward=None, backward=None):
        calls.append((forward, backward))
        return scan_chunked(p.float(), theta.float(), u if u.is_complex() else pairs_to_complex(u.float()), h0)

    monkeypatch.setattr(K, "triton_available", lambda device: True)
    monkeypatch.setattr(ts, "scan_triton", stand_in)
    args = _args(tmp_path, methods="triton", dtypes="float32,bf16", forward="8,8,1,1", sweep=True)
    assert scan.run(args) == 0
    result = json.loads((tmp_path / "scan.json").read_text())
    fwd = ts.ForwardConfig(8, 8, 1, True)
    assert result["kernel_configs"] == {"forward": dataclasses.asdict(fwd),
                                        "backward": dataclasses.asdict(ts.DEFAULT_BACKWARD)}
    assert [(r["method"], r["dtype"]) for r in result["rows"]] == [("triton", "float32"), ("triton", "bf16")]
    sweep = {(r["kernel"], tuple(r["config"].values())) for r in result["sweep"]["rows"] if "error" not in r}
    assert sweep == {("forward", dataclasses.astuple(c)) for c in scan.SWEEP_FORWARD} | \
        {("backward", dataclasses.astuple(c)) for c in scan.SWEEP_BACKWARD}
    # every call passed its configurations explicitly: the sweep's, then the rows' (forward 8,8,1,1)
    assert {f for f, _ in calls} >= set(scan.SWEEP_FORWARD) | {fwd}
    assert {b for _, b in calls} >= set(scan.SWEEP_BACKWARD)
    assert calls[-1] == (fwd, ts.DEFAULT_BACKWARD)
