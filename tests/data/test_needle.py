"""The needle task: deterministic for a seed, labels recoverable only from the needle."""

from __future__ import annotations

import time

import pytest
import torch

from minimipt.data import make_needle_splits, make_needle_task


def brute_force_labels(tokens: torch.Tensor, mark: int, first_class: int) -> list[int]:
    """Read every sequence token by token: the label is the class token right after a MARK."""
    out = []
    for row in tokens.tolist():
        found = {row[i + 1] - first_class for i in range(len(row) - 1) if row[i] == mark}
        assert len(found) == 1, f"needles disagree or are missing: {found}"
        out.append(found.pop())
    return out


def test_default_is_the_papers_setup():
    task = make_needle_task()
    assert task.tokens.shape == (5000, 512) and task.tokens.dtype == torch.long
    assert task.labels.shape == (5000,) and set(task.labels.unique().tolist()) == {0, 1, 2, 3}
    v = task.vocab
    assert v.size == 2 + 4 + 100 and int(task.tokens.max()) < v.size and int(task.tokens.min()) >= 1
    assert (task.needle_pos < 51 - 1).all()  # MARK and class token both in the first 10%
    assert ((task.tokens == v.mark).sum(1) == 1).all()
    assert (task.tokens[:, 60:] >= v.noise_start).all()  # noise elsewhere
    counts = torch.bincount(task.labels, minlength=4)
    assert counts.min() > 1100  # roughly balanced


def test_deterministic_for_a_seed():
    a, b = make_needle_task(300, seed=7), make_needle_task(300, seed=7)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
    c = make_needle_task(300, seed=8)
    assert not torch.equal(a.tokens, c.tokens)
    tr, te = make_needle_splits(200, 100, seed=3)
    assert len(tr) == 200 and len(te) == 100 and tr.seed != te.seed


@pytest.mark.parametrize("kw", [
    {},
    {"n_needles": 3, "n_distractors": 5},
    {"length": 300, "n_classes": 7, "n_distractors": 20, "needle_range": (0.5, 1.0)},
    {"length": 64, "n_classes": 2, "n_needles": 2, "needle_range": (0.0, 0.5), "n_noise": 3},
])
def test_labels_match_brute_force_and_layout(kw):
    task = make_needle_task(400, seed=1, **kw)
    v, L = task.vocab, task.length
    assert brute_force_labels(task.tokens, v.mark, v.class_token(0)) == task.labels.tolist()
    a, b = kw.get("needle_range", (0.0, 0.1))
    assert (task.needle_pos >= int(a * L)).all() and (task.needle_pos + 1 < int(b * L)).all()
    n_d = kw.get("n_distractors", 0)
    rows = torch.arange(len(task))[:, None]
    if n_d:
        dist = task.tokens[rows, task.distractor_pos] - v.class_token(0)  # (N, n_distractors)
        assert (dist != task.labels[:, None]).all() and (dist >= 0).all() and (dist < v.n_classes).all()
    is_class = (task.tokens >= v.class_token(0)) & (task.tokens < v.noise_start)
    assert (is_class.sum(1) == kw.get("n_needles", 1) + n_d).all()  # nothing else looks like a class


def test_distractors_defeat_counting():
    """With more distractors than needles, the most frequent class token is never the label."""
    task = make_needle_task(500, n_distractors=8, seed=2)
    v = task.vocab
    counts = torch.stack([(task.tokens == v.class_token(c)).sum(1) for c in range(v.n_classes)], 1)
    majority_acc = (counts.argmax(1) == task.labels).float().mean().item()
    assert majority_acc < 0.5


def test_long_sequences_and_speed():
    t0 = time.perf_counter()
    make_needle_task(5000, 512)
    assert time.perf_counter() - t0 < 2.0
    task = make_needle_task(4, length=65_536, n_needles=2, n_distractors=3, needle_range=(0.0, 1.0))
    v = task.vocab
    assert brute_force_labels(task.tokens, v.mark, v.class_token(0)) == task.labels.tolist()


@pytest.mark.parametrize("kw, match", [
    ({"length": 1}, "length"),
    ({"n_classes": 1}, "n_classes"),
    ({"needle_range": (0.2, 0.1)}, "needle_range"),
    ({"needle_range": (0.0, 0.01), "length": 100}, "needle"),
    ({"n_distractors": 400, "length": 512}, "half"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        make_needle_task(10, **kw)
