"""Fixtures of the course's tests: results grids written by real tiny training runs."""

from __future__ import annotations

import pytest

from minimipt.train import make_config, train

FAST = dict(epochs=1, max_steps=3, n_train=64, n_val=32, n_test=32, eval_every=2, ckpt_every=100)


def _run(root, grid, name, task="needle", **kw):
    cfg = make_config(task, "smoke", **({**FAST, **kw} if task == "needle" else kw))
    return train(cfg, root / grid / name, progress=False)


@pytest.fixture(scope="session")
def grids(tmp_path_factory):
    """``(root, {run name: results})``: a needle grid (a learning-rate sweep, an unbounded cache, a
    Transformer), a long-needle grid and a WikiText-2 grid, trained once for the whole session."""
    root = tmp_path_factory.mktemp("results")
    runs = {
        "k4-lr3e-3-s0": dict(cache_slots=4, lr=3e-3, seed=0),
        "k4-lr3e-3-s1": dict(cache_slots=4, lr=3e-3, seed=1),
        "k4-lr1e-3-s0": dict(cache_slots=4, lr=1e-3, seed=0),
        "unbounded-s0": dict(cache_slots=None, write_threshold=0.02, write_penalty=0.1, seed=0),
        "transformer-s0": dict(model="transformer", seed=0),
    }
    out = {name: _run(root, "needle-512", name, **kw) for name, kw in runs.items()}
    for name, kw in {"k4": dict(cache_slots=4), "tf": dict(model="transformer")}.items():
        out[f"long-{name}"] = _run(root, "needle-long", name, pos_embedding="none", eval_lengths=[128], **kw)
    for name, kw in {"tf": dict(model="transformer"), "k64": dict(cache_slots=64)}.items():
        out[f"lm-{name}"] = _run(root, "wikitext-2-offline", name, task="wikitext", max_steps=4, eval_every=2, **kw)
    return root, out
