"""The training loop (minimipt.train.loop): smoke runs of every task write complete results files
and checkpoints; an interrupted or killed run resumes to the same model; a one-step warm-up trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import minimipt
from minimipt.fileio import TMP_GLOB
from minimipt.train import make_config, train
from minimipt.train.checkpoint import load_checkpoint, recorded_hashes
from tests._support import ROOT, SMALL_SPLITS

pytestmark = pytest.mark.usefixtures("data_home")


REQUIRED = {"config", "seed", "git_commit", "torch_version", "hardware", "wall_time_s", "metrics", "params",
            "complete", "history", "task"}


@pytest.mark.parametrize("task,model,extra", [
    pytest.param("needle", "mipt", {}, marks=pytest.mark.slow),  # the cache_slots=2 run covers the same code
    ("needle", "mipt", {"cache_slots": 2}),
    ("needle", "transformer", {}),
    pytest.param("ag_news", "mipt", {}, marks=pytest.mark.slow),
    pytest.param("wikitext", "mipt", {"cache_slots": 4}, marks=pytest.mark.slow),
    pytest.param("wikitext", "transformer", {}, marks=pytest.mark.slow),
])
def test_smoke_runs_write_results(tmp_path, task, model, extra):
    cfg = make_config(task, "smoke", model=model, **extra)
    res = train(cfg, tmp_path / "run", progress=False)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert REQUIRED <= set(on_disk) and on_disk["complete"]
    assert on_disk["steps"] == on_disk["total_steps"] > 0
    assert on_disk["params"]["total"] > on_disk["params"]["non_embedding"] > 0
    # the model's own config is recorded with the results and the checkpoint, and rebuilds the model
    mc = dict(on_disk["model_config"])
    cls = {"MIPTLM": minimipt.MIPTLM, "MIPTClassifier": minimipt.MIPTClassifier, "TransformerLM": minimipt.TransformerLM,
           "TransformerClassifier": minimipt.TransformerClassifier}[mc.pop("class")]
    config = (minimipt.MIPTConfig if model == "mipt" else minimipt.TransformerConfig).from_dict(mc)
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ck["model_config"] == on_disk["model_config"]
    cls(config).load_state_dict(ck["model"])
    if task == "wikitext":
        assert res["metrics"]["eval"]["ppl_token"] > 1
        # a generated sample through the streaming step path, decoded to text
        sample = on_disk["sample"]
        assert sample["prompt"] and isinstance(sample["continuation"], str) and "step" in sample["path"]
    else:
        assert "sample" not in on_disk
        assert 0 <= res["metrics"]["eval"]["accuracy"] <= 1 and "val" in res["metrics"]


@pytest.mark.slow
def test_smoke_training_learns_the_needle(tmp_path):
    """Not a timing test: the smoke preset must actually learn something (loss goes down)."""
    cfg = make_config("needle", "smoke", epochs=6)
    res = train(cfg, tmp_path / "run", progress=False)
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < losses[0]


def _params(path):
    return load_checkpoint(path)["model"]


def test_interrupted_run_resumes_to_the_same_model(tmp_path):
    cfg = make_config("needle", "smoke", ckpt_every=2, **SMALL_SPLITS)
    train(cfg, tmp_path / "full", progress=False)
    part = train(cfg, tmp_path / "split", progress=False, stop_after_steps=5)
    assert not part["complete"] and part["steps"] == 5
    with pytest.raises(ValueError, match="--resume"):
        train(cfg, tmp_path / "split", progress=False)
    done = train(cfg, tmp_path / "split", progress=False, resume=True)
    assert done["complete"] and done["steps"] == done["total_steps"]
    a, b = _params(tmp_path / "full" / "checkpoint.pt"), _params(tmp_path / "split" / "checkpoint.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_resume_refuses_another_config(tmp_path):
    train(make_config("needle", "smoke", **SMALL_SPLITS), tmp_path / "r", progress=False, stop_after_steps=2)
    with pytest.raises(ValueError, match="config differs"):
        train(make_config("needle", "smoke", lr=1e-2, **SMALL_SPLITS), tmp_path / "r", progress=False, resume=True)


@pytest.mark.slow
def test_killed_process_resumes_without_losing_a_step(tmp_path):
    """SIGKILL a real training process mid-run; --resume finishes it from the last checkpoint."""
    out = tmp_path / "killed"
    env = {**os.environ, "MINIMIPT_DATA": str(tmp_path / "data"), "MINIMIPT_DEVICE": "cpu"}
    cmd = [sys.executable, "-m", "minimipt", "train", "needle", "--preset", "smoke", "--out", str(out),
           "--quiet", "--set", "ckpt_every=1", "--set", "epochs=20"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = out / "checkpoint.pt"
    deadline = time.time() + 60
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                step = load_checkpoint(ckpt)["step"]
            except Exception:  # noqa: BLE001 - only a complete file can be read; atomic writes guarantee it
                pytest.fail("a checkpoint file was readable as a path but not loadable: not atomic")
            if step >= 5:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.communicate()[1].decode()[-800:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["step"]
    assert killed_at >= 5
    res = subprocess.run(cmd + ["--resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    final = json.loads((out / "results.json").read_text())
    assert final["complete"] and final["steps"] == final["total_steps"]
    assert load_checkpoint(ckpt)["step"] == final["total_steps"]
    assert not list(out.glob(TMP_GLOB)), "temporary checkpoint files were left behind"
    assert recorded_hashes(ckpt) and len(recorded_hashes(ckpt)) == 1


def test_a_one_step_warm_up_trains(tmp_path):
    """OneCycleLR divides by pct_start · total_steps − 1: 10 steps with warmup_frac=0.1 make that 0,
    which must train rather than raise ZeroDivisionError."""
    res = train(make_config("needle", "smoke", max_steps=10, eval_every=10, ckpt_every=10, **SMALL_SPLITS),
                tmp_path / "run", progress=False)
    assert res["complete"] and res["steps"] == 10
