"""Multi-query associative recall: the generator against a token-by-token reading, and the training task."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from minimipt.data import make_mqar_task
from minimipt.data.mqar import IGNORE
from minimipt.train import make_config, train


def brute_force_answers(tokens: torch.Tensor, n_pairs: int) -> list[dict[int, int]]:
    """Read each sequence token by token: the first 2P tokens are (key, value) pairs; afterwards a
    token that is one of those keys asks for its value. Returns, per row, position -> value."""
    out = []
    for row in tokens.tolist():
        pairs = dict(zip(row[0:2 * n_pairs:2], row[1:2 * n_pairs:2]))
        out.append({t: pairs[tok] for t, tok in enumerate(row) if t >= 2 * n_pairs and tok in pairs})
    return out


@pytest.mark.parametrize("kw", [
    dict(n_samples=200, length=64, n_pairs=4, vocab_size=512),
    dict(n_samples=100, length=128, n_pairs=32, vocab_size=8192, random_fillers=True),
    dict(n_samples=50, length=40, n_pairs=10, vocab_size=24, random_fillers=True, power_a=1.0),
])
def test_targets_match_a_token_by_token_reading(kw):
    task = make_mqar_task(seed=3, **kw)
    N, L, P, V = kw["n_samples"], kw["length"], kw["n_pairs"], kw["vocab_size"]
    assert task.tokens.shape == task.targets.shape == (N, L) and task.keys.shape == (N, P)
    assert int(task.tokens.min()) >= 0 and int(task.tokens.max()) < V
    # keys in [1, V/2), values in [V/2, V), each distinct within its sequence
    assert ((task.keys >= 1) & (task.keys < V // 2)).all() and ((task.values >= V // 2) & (task.values < V)).all()
    assert all(len(set(r)) == P for r in task.keys.tolist()) and all(len(set(r)) == P for r in task.values.tolist())
    # every key is asked exactly once, after the pairs, and nothing else is asked
    asked = task.targets != IGNORE
    assert (asked.sum(1) == P).all() and not asked[:, :2 * P].any()
    answers = brute_force_answers(task.tokens, P)
    for i in range(N):
        got = {t: int(task.targets[i, t]) for t in asked[i].nonzero().flatten().tolist()}
        assert got == answers[i]  # a filler never looks like a query: no key appears where nothing is asked
    assert task.chance_accuracy == 1 / P


def test_fillers_zero_or_uniform():
    zero = make_mqar_task(300, 64, 8, vocab_size=256, seed=0)
    filler = torch.ones_like(zero.tokens, dtype=torch.bool)
    filler[:, :16] = False
    filler[torch.arange(300)[:, None], zero.query_pos] = False
    assert (zero.tokens[filler] == 0).all()  # Zoology's figure-2 setting
    rnd = make_mqar_task(300, 64, 8, vocab_size=256, random_fillers=True, seed=0)
    counts = torch.bincount(rnd.tokens[filler], minlength=256).float()
    assert (counts > 0).sum() > 250 and counts.max() < 4 * counts.mean()  # spread over the vocabulary


def test_power_law_favours_short_gaps():
    short = make_mqar_task(2000, 512, 8, seed=1)  # Zoology's a = 0.01
    flat = make_mqar_task(2000, 512, 8, power_a=1.0, seed=1)
    gap = lambda t: ((t.query_pos - 16) // 2).float()  # noqa: E731
    assert gap(short).median() < 0.3 * gap(flat).median()
    assert gap(flat).mean() == pytest.approx((512 - 16) / 4, rel=0.05)  # uniform over [0, 248)
    assert ((short.query_pos % 2) == 0).all() and (short.query_pos < 512).all()


def test_deterministic_for_a_seed():
    a, b = make_mqar_task(100, 64, 4, seed=7), make_mqar_task(100, 64, 4, seed=7)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.tokens, make_mqar_task(100, 64, 4, seed=8).tokens)
    x, y = a.dataset()[0]
    assert x.shape == y.shape == (64,) and "pairs=4" in repr(a)


@pytest.mark.parametrize("kw, match", [
    (dict(length=60, n_pairs=16), "length >= 4 \\* n_pairs = 64"),
    (dict(n_pairs=20, vocab_size=40), "vocab_size >= 2 \\* \\(n_pairs \\+ 1\\) = 42"),
    (dict(power_a=0.0), "power_a"),
    (dict(power_a=1.5), "power_a"),
    (dict(random_fillers=1), "random_fillers"),
    (dict(n_samples=0), "n_samples"),
    (dict(seed=-1), "seed"),
    (dict(length=64.0), "length"),
])
def test_bad_arguments_say_what_to_change(kw, match):
    with pytest.raises(ValueError, match=match):
        make_mqar_task(**{"n_samples": 4, **kw})


FAST = dict(max_steps=4, n_train=64, n_val=16, n_test=16, eval_every=2, ckpt_every=100)


@pytest.mark.parametrize("model, extra", [("transformer", {}), ("mipt", {"cache_slots": 4})])
def test_train_mqar_scores_the_queries_only(tmp_path, model, extra):
    from minimipt.train.tasks import build_task

    cfg = make_config("mqar", "smoke", model=model, **FAST, **extra)
    res = train(cfg, tmp_path / model, progress=False)
    e = res["metrics"]["eval"]
    assert res["complete"] and e["n"] == 16 * cfg.n_pairs and 0.0 <= e["accuracy"] <= 1.0
    assert res["task"]["n_pairs"] == cfg.n_pairs and "MQAR" in res["task"]["protocol"]
    assert ("writes_per_seq" in e) == (model == "mipt")
    assert json.loads((tmp_path / model / "results.json").read_text())["metrics"]["eval"]["n"] == e["n"]
    # the loss is the cross-entropy at the query positions of the model's own logits, nothing else
    task = build_task(cfg)
    net = task.build_model(cfg)
    x, y = task.train.x[:8], task.train.y[:8]
    logits = net(x)  # (B, L, V): a language model
    asked = y >= 0
    expected = F.cross_entropy(logits[asked], y[asked])
    assert torch.allclose(task.loss(net, (x, y)), expected, atol=1e-6)
    assert logits.shape == (8, cfg.seq_len, cfg.vocab_size)
    q, target, _ = task.query_logits(net, x, y)  # only the asked positions go through the output layer
    assert q.shape == (8, cfg.n_pairs, cfg.vocab_size) and torch.equal(target.flatten(), y[asked])
    assert torch.allclose(q.flatten(0, 1), logits[asked], atol=1e-5)  # same positions, in order


def test_train_mqar_from_the_command_line(tmp_path):
    from minimipt.__main__ import main

    out = tmp_path / "cli"
    assert main(["train", "mqar", "--model", "transformer", "--out", str(out), "--quiet",
                 "--set", "max_steps=2", "--set", "n_train=32", "--set", "n_val=8", "--set", "n_test=8"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["task"] == "mqar" and res["complete"]
