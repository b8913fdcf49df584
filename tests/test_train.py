"""Training entry point: smoke runs of every task, results files, atomic checkpoints, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import minimipt
from minimipt.fileio import TMP_GLOB
from minimipt.train import make_config, train
from minimipt.train.checkpoint import load_checkpoint, recorded_hashes, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    """Prepared arrays go to a temporary MINIMIPT_DATA, never into the repository."""
    monkeypatch.setenv("MINIMIPT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MINIMIPT_DEVICE", "cpu")


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


SMALL = dict(n_train=96, n_val=16, n_test=16)  # 3 steps per epoch of the needle smoke preset


def test_interrupted_run_resumes_to_the_same_model(tmp_path):
    cfg = make_config("needle", "smoke", ckpt_every=2, **SMALL)
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
    train(make_config("needle", "smoke", **SMALL), tmp_path / "r", progress=False, stop_after_steps=2)
    with pytest.raises(ValueError, match="config differs"):
        train(make_config("needle", "smoke", lr=1e-2, **SMALL), tmp_path / "r", progress=False, resume=True)


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


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt("interrupted mid-write")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # verified against the hash recorded for step 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "c.pt.sha256"]


def test_config_errors():
    with pytest.raises(ValueError, match="task must be"):
        make_config("mnist")
    with pytest.raises(ValueError, match="preset must be"):
        make_config("needle", "huge")
    with pytest.raises(ValueError, match="unknown config keys"):
        make_config("needle", "smoke", widht=3)
    with pytest.raises(ValueError, match="lr must be"):
        make_config("needle", "smoke", lr=0)


@pytest.mark.parametrize("key,value,text", [
    ("epochs", 0, "TrainConfig.epochs must be a finite number > 0; got 0"),
    ("max_steps", 0, "TrainConfig.max_steps must be None (use epochs) or a positive int; got 0"),
    ("eval_every", 0, "TrainConfig.eval_every must be a positive int"),
    ("grad_clip", float("nan"), "TrainConfig.grad_clip must be a finite number >= 0 (0: no clipping); got nan"),
    ("amp", "maybe", "TrainConfig.amp must be true or false; got 'maybe'"),
    ("batch_size", 2.0, "TrainConfig.batch_size must be a positive int; got 2.0"),
    ("warmup_frac", 0, "TrainConfig.warmup_frac must be a number in (0, 1)"),
    ("device", "bogus", "TrainConfig.device must be None"),
    ("extra", {"n_needle": 2}, "TrainConfig.extra has unknown keys ['n_needle'] for task 'needle'; valid keys: "
                               "['n_needles', 'n_distractors', 'needle_range', 'n_noise']"),
    ("extra", {"n_needles": 0}, "n_needles must be an int >= 1, got 0"),
    ("extra", {"needle_range": 0.5}, "TrainConfig.extra['needle_range'] must be a pair"),
    ("n_heads", 3, "TrainConfig.n_heads=3 is refused by the model: MIPTConfig.cache_heads must be a positive int "
                   "dividing d_model=32; got 3"),
    ("seq_len", 0, "TrainConfig.seq_len must be a positive int; got 0"),
    ("attention", "flash", "TrainConfig.attention='flash' is refused by the model"),  # checked for MIPT runs too
    ("train_split", "train", "TrainConfig.train_split, eval_split must be one of the pairs"),  # with sample-eval
])
def test_config_values_are_checked_when_made(key, value, text):
    """Each message names the field and the value; a model field is checked by the model config."""
    task = "ag_news" if key == "train_split" else "needle"
    with pytest.raises(ValueError) as err:
        make_config(task, "smoke", **{key: value})
    assert text in str(err.value)


def test_config_round_trips_and_normalises():
    cfg = make_config("needle", "smoke", p_init=(0.01, 0.2), eval_lengths=(128,), device=torch.device("cpu"),
                      extra={"n_distractors": 2})
    assert cfg.p_init == [0.01, 0.2] and cfg.eval_lengths == [128] and cfg.device == "cpu"
    assert make_config(**{k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items()}) == cfg


def test_a_one_step_warm_up_trains(tmp_path):
    """OneCycleLR divides by pct_start · total_steps − 1: 10 steps with warmup_frac=0.1 used to raise
    ZeroDivisionError."""
    res = train(make_config("needle", "smoke", max_steps=10, eval_every=10, ckpt_every=10, **SMALL),
                tmp_path / "run", progress=False)
    assert res["complete"] and res["steps"] == 10


def test_full_ag_news_config_runs_on_a_canonical_layout(tmp_path, monkeypatch):
    """The standard protocol (train.csv / test.csv) runs unchanged on a tiny copy in the canonical layout."""
    from minimipt.data import sources

    src = tmp_path / "raw" / "ag_news_csv"
    src.mkdir(parents=True)
    sample = (sources.SAMPLES_DIR / "ag_news_sample.csv").read_text().splitlines(keepends=True)
    (src / "train.csv").write_text("".join(sample[:400]))
    (src / "test.csv").write_text("".join(sample[400:]))
    # the tiny copy is not the canonical release: an empty manifest folder lets it through (with a warning)
    monkeypatch.setattr(sources, "MANIFEST_DIR", tmp_path / "no-manifests")
    cfg = make_config("ag_news", "full", d_model=16, n_layers=1, n_heads=2, seq_len=32, epochs=1, batch_size=32,
                      data_root=str(tmp_path / "raw"))
    with pytest.warns(sources.UnverifiedFileWarning):
        res = train(cfg, tmp_path / "run", progress=False)
    assert res["complete"] and res["task"]["n_eval"] == len(sample) - 400


def test_report_builds_table_from_results(tmp_path):
    from minimipt.course.report import write_report
    from minimipt.course.runs import load_runs, render_table, summarise, unfinished_runs

    for seed in (0, 1):
        for lr in (1e-3, 3e-3):
            train(make_config("needle", "smoke", seed=seed, lr=lr, epochs=1, **SMALL),
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


def test_ag_news_rejects_a_bpe_vocabulary_size():
    """vocab_size sizes the WikiText BPE; AG News would silently ignore it, so it is refused."""
    from minimipt.train.tasks import build_task

    with pytest.raises(ValueError, match="min_count"):
        build_task(make_config("ag_news", "smoke", vocab_size=4096))


def test_full_wikitext103_preset_runs_unchanged_on_a_stand_in(tmp_path, monkeypatch):
    """Issue 8: the full WikiText-103 configuration runs unchanged for a user who has the data. The
    bundled WikiText-2 excerpt stands in for the three WikiText-103 files (not the canonical release,
    so an empty manifest folder lets it through, with a warning); only the sizes are shrunk."""
    from minimipt.data import sources

    raw = tmp_path / "raw" / "wikitext-103"
    raw.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        text = (sources.SAMPLES_DIR / "wikitext-2-sample" / f"wiki.{split}.tokens").read_text()
        (raw / f"wiki.{split}.tokens").write_text(text)
    monkeypatch.setattr(sources, "MANIFEST_DIR", tmp_path / "no-manifests")
    monkeypatch.setenv("MINIMIPT_DATA", str(tmp_path / "data"))
    full = make_config("wikitext", "full")
    cfg = make_config("wikitext", "full", d_model=16, n_layers=1, n_heads=2, seq_len=32, batch_size=4, max_steps=3,
                      vocab_size=320, eval_every=2, ckpt_every=2, eval_batches=1, data_root=str(tmp_path / "raw"))
    assert (cfg.dataset, cfg.train_split, cfg.eval_split) == (full.dataset, full.train_split, full.eval_split) \
        == ("wikitext-103", "train", "test")
    with pytest.warns(sources.UnverifiedFileWarning):
        res = train(cfg, tmp_path / "run", progress=False)
    assert res["complete"] and res["task"]["protocol"].startswith("wikitext-103")
    assert res["metrics"]["eval"]["ppl_token"] > 1 and res["sample"]["continuation"] is not None


def test_committed_results_document_is_current():
    """docs/results.md is exactly what `python -m minimipt report` writes from the committed results."""
    from minimipt.course.report import results_markdown
    from minimipt.env import repo_root

    doc = repo_root() / "docs" / "results.md"
    figures = {p.stem: f"figures/{p.name}" for p in sorted((doc.parent / "figures").glob("*.png"))}
    assert doc.read_text() == results_markdown(figures=figures), "run `python -m minimipt report` and commit"
