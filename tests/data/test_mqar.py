"""Multi-query associative recall (minimipt.data.mqar): the generator against a token-by-token reading.
The training task built on it: tests/train/test_tasks.py."""

from __future__ import annotations

import pytest
import torch

from minimipt.data import make_mqar_task
from minimipt.data.mqar import IGNORE


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
