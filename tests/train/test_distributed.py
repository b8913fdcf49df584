"""Two CPU processes under torchrun (gloo): DistributedDataParallel keeps the ranks identical and
matches a single process trained on the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from minimipt.train import make_config, train
from minimipt.train.checkpoint import load_checkpoint
from tests._support import ROOT

SETTINGS = ["--set", "max_steps=6", "--set", "eval_every=2", "--set", "batch_size=16", "--set", "ckpt_every=3"]


def _torchrun(tmp_path, out, extra=()):
    env = {**os.environ, "MINIMIPT_DATA": str(tmp_path / "data"), "MINIMIPT_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "minimipt", "train", "needle", "--preset", "smoke", "--out", str(out), "--quiet", *SETTINGS, *extra]
    # a process group of its own, so a hung run is killed with all its workers, not only torchrun
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in 240 s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIPT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MINIMIPT_DEVICE", "cpu")
    res = _torchrun(tmp_path, tmp_path / "ddp")
    assert res.returncode == 0, res.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["complete"] and ddp["hardware"]["world_size"] == 2
    assert ddp["ranks_in_sync"] is True

    cfg = make_config("needle", "smoke", max_steps=6, eval_every=2, batch_size=16, ckpt_every=3)
    single = train(cfg, tmp_path / "single", progress=False)
    # same global batch, gradients averaged over ranks: the same training curve and final weights
    a = [h["train_loss"] for h in ddp["history"]]
    b = [h["train_loss"] for h in single["history"]]
    assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    wa = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model"]
    wb = load_checkpoint(tmp_path / "single" / "checkpoint.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)
    assert ddp["metrics"]["eval"]["accuracy"] == pytest.approx(single["metrics"]["eval"]["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_resume_under_torchrun(tmp_path):
    out = tmp_path / "ddp"
    first = _torchrun(tmp_path, out, ["--max-minutes", "0.0001"])
    assert first.returncode == 0, first.stderr[-3000:]
    part = json.loads((out / "results.json").read_text())
    assert not part["complete"] and part["steps"] >= 1
    second = _torchrun(tmp_path, out, ["--resume"])
    assert second.returncode == 0, second.stderr[-3000:]
    done = json.loads((out / "results.json").read_text())
    assert done["complete"] and done["steps"] == 6 and done["ranks_in_sync"] is True
