"""The needle-in-a-haystack classification task (the paper's recall test), seeded and vectorised.

Token layout (vocabulary ``V = 2 + C + n_noise``, see :class:`NeedleVocab`):

=========================  =================================================================
id 0                       ``<pad>`` (never generated; reserved for padding)
id 1                       ``MARK``, the needle marker
ids ``2 .. 1 + C``         class tokens; class ``c`` is token ``2 + c``
ids ``2 + C .. V - 1``     noise tokens, drawn uniformly and independently at every position
=========================  =================================================================

A sequence of length ``L`` is noise except for

* ``n_needles`` needles: the pair ``MARK, 2 + label`` at positions ``(p, p + 1)``, both inside the
  needle range ``[floor(a L), floor(b L))`` for ``needle_range = (a, b)``; every needle of a
  sequence carries the same label;
* ``n_distractors`` distractors: a class token of a *different* class, anywhere in the sequence,
  never preceded by ``MARK``.

So the label is recoverable only from the needle: it is the token that follows a ``MARK``. With
distractors, counting class tokens points at a wrong class, and only binding the class token to its
marker solves the task. Defaults are the paper's setup: ``L = 512``, ``C = 4``, one needle in the
first 10% of the sequence, noise elsewhere, no distractors (the marker is then redundant).

The same seed gives the same tensors (for a given torch version); generation is vectorised over
the batch (5,000 x 512 takes a few milliseconds) and loops only over needles and distractors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["NeedleVocab", "NeedleTask", "make_needle_task", "make_needle_splits"]

_MAX_TRIES = 10_000


@dataclass(frozen=True)
class NeedleVocab:
    """Token ids of the needle task (see the module docstring)."""

    n_classes: int
    n_noise: int
    pad: int = 0
    mark: int = 1

    def class_token(self, c: int | torch.Tensor):
        return 2 + c

    @property
    def noise_start(self) -> int:
        return 2 + self.n_classes

    @property
    def size(self) -> int:
        """V, the vocabulary size a model's embedding needs."""
        return 2 + self.n_classes + self.n_noise


@dataclass
class NeedleTask:
    """Generated sequences. ``tokens`` (N, L) int64, ``labels`` (N,) int64 in ``[0, C)``."""

    tokens: torch.Tensor  # (N, L)
    labels: torch.Tensor  # (N,)
    needle_pos: torch.Tensor  # (N, n_needles): position of each MARK; the class token is at +1
    distractor_pos: torch.Tensor  # (N, n_distractors)
    vocab: NeedleVocab
    seed: int

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    def dataset(self) -> torch.utils.data.TensorDataset:
        """``(tokens, labels)`` pairs for a ``DataLoader``."""
        return torch.utils.data.TensorDataset(self.tokens, self.labels)

    def __repr__(self) -> str:
        return (f"NeedleTask(N={len(self)}, L={self.length}, C={self.vocab.n_classes}, "
                f"V={self.vocab.size}, needles={self.needle_pos.shape[1]}, "
                f"distractors={self.distractor_pos.shape[1]}, seed={self.seed})")


def _draw_free(gen: torch.Generator, occupied: torch.Tensor, lo: int, hi: int, width: int) -> torch.Tensor:
    """Per row, a start ``p`` uniform over ``[lo, hi - width]`` with ``occupied[p : p + width]`` all
    free (rejection sampling, vectorised over rows; deterministic for a generator state)."""
    n = occupied.shape[0]
    pos = torch.empty(n, dtype=torch.long)  # (N,)
    todo = torch.arange(n)
    for _ in range(_MAX_TRIES):
        cand = torch.randint(lo, hi - width + 1, (len(todo),), generator=gen)
        ok = torch.ones(len(todo), dtype=torch.bool)
        for k in range(width):
            ok &= ~occupied[todo, cand + k]
        pos[todo[ok]] = cand[ok]
        todo = todo[~ok]
        if len(todo) == 0:
            return pos
    raise RuntimeError("could not place needles/distractors without overlap; use fewer of them "
                       "or a wider needle_range")


def make_needle_task(n_samples: int = 5000, length: int = 512, n_classes: int = 4, *,
                     n_needles: int = 1, n_distractors: int = 0,
                     needle_range: tuple[float, float] = (0.0, 0.1), n_noise: int = 100,
                     seed: int = 0) -> NeedleTask:
    """Generate ``n_samples`` needle sequences of ``length`` tokens (see the module docstring)."""
    for name, value, low in (("n_samples", n_samples, 1), ("length", length, 2),
                             ("n_classes", n_classes, 2), ("n_needles", n_needles, 1),
                             ("n_distractors", n_distractors, 0), ("n_noise", n_noise, 1),
                             ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    a, b = needle_range
    if not 0.0 <= a < b <= 1.0:
        raise ValueError(f"needle_range must be (a, b) with 0 <= a < b <= 1 (fractions of the "
                         f"length), got {needle_range!r}")
    lo, hi = math.floor(a * length), math.floor(b * length)
    if 2 * n_needles > (hi - lo) // 2:
        raise ValueError(f"needle_range {needle_range!r} of length {length} spans positions "
                         f"[{lo}, {hi}): room for at most {(hi - lo) // 4} two-token needles "
                         f"(half the range), asked for n_needles={n_needles}; widen the range or lengthen")
    if 2 * n_needles + n_distractors > length // 2:
        raise ValueError(f"{n_needles} needles and {n_distractors} distractors would fill more than "
                         f"half of length={length}; use fewer or a longer sequence")

    vocab = NeedleVocab(n_classes, n_noise)
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(n_samples)
    labels = torch.randint(0, n_classes, (n_samples,), generator=gen)  # (N,)
    tokens = torch.randint(vocab.noise_start, vocab.size, (n_samples, length), generator=gen)  # (N, L)
    occupied = torch.zeros(n_samples, length, dtype=torch.bool)  # (N, L)

    needle_pos = torch.empty(n_samples, n_needles, dtype=torch.long)
    for j in range(n_needles):
        p = _draw_free(gen, occupied, lo, hi, width=2)  # (N,)
        tokens[rows, p] = vocab.mark
        tokens[rows, p + 1] = vocab.class_token(labels)
        occupied[rows, p] = occupied[rows, p + 1] = True
        needle_pos[:, j] = p

    distractor_pos = torch.empty(n_samples, n_distractors, dtype=torch.long)
    for j in range(n_distractors):
        q = _draw_free(gen, occupied, 0, length, width=1)  # (N,)
        # a class other than the label: label + {1, ..., C-1} (mod C), uniform
        other = (labels + torch.randint(1, n_classes, (n_samples,), generator=gen)) % n_classes
        tokens[rows, q] = vocab.class_token(other)
        occupied[rows, q] = True
        distractor_pos[:, j] = q
    # A distractor never follows a MARK: MARK positions are always followed by their class token.
    return NeedleTask(tokens, labels, needle_pos, distractor_pos, vocab, seed)


def make_needle_splits(n_train: int = 5000, n_test: int = 1000, seed: int = 0,
                       **kwargs) -> tuple[NeedleTask, NeedleTask]:
    """Train and test sets from disjoint seeds (``2 * seed`` and ``2 * seed + 1``); the paper's
    sizes (5,000 / 1,000) by default. ``kwargs`` go to :func:`make_needle_task`."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return (make_needle_task(n_train, seed=2 * seed, **kwargs),
            make_needle_task(n_test, seed=2 * seed + 1, **kwargs))
