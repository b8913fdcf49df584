"""Multi-query associative recall (MQAR), the recall benchmark of Zoology, seeded and vectorised.

Arora, Eyuboglu et al. 2023, "Zoology: Measuring and improving recall in efficient language models"
(arXiv 2312.04927), section 3 and their ``zoology/data/associative_recall.py``. A sequence of length
``L`` holds ``P`` key-value pairs, then queries every key once; at each query the model must
predict the value that followed that key::

    position   0    1    2    3   ...  2P-2 2P-1 | 2P ...                                     L-1
    token      k_1  v_1  k_2  v_2 ...  k_P  v_P  | filler ... k_3 filler ... k_1 filler ...
    target     -    -    -    -   ...  -    -    | -      ... v_3 -      ... v_1 -      ...

Token layout (vocabulary ``V``, Zoology's): keys are ids ``1 .. V/2 − 1``, values ``V/2 .. V − 1``;
the ``P`` keys of a sequence are distinct, and so are its ``P`` values. Queries sit at even offsets
``2P + 2g`` after the pairs, with ``g`` drawn without replacement from ``{0, …, S − 1}``,
``S = ⌊(L − 2P)/2⌋``, with probability ``∝ (g + 1)^(a − 1)`` (``a = power_a``; Zoology's 0.01
favours short gaps, as repeated bigrams do in text; ``a = 1`` is uniform). Every other position is
a filler: id 0 (``random_fillers=False``, the setting of Zoology's figure 2) or an id drawn uniformly
from the vocabulary (``random_fillers=True``, their generator's default), which hides the queries
among look-alikes.

One deviation from Zoology, so that every answer is defined by the pairs alone: a random filler is
never one of its own sequence's keys (Zoology's can be: rarely at V = 8,192 and few pairs, about 28
times per sequence at 128 pairs and L = 2,048).

Targets use ``-100`` (PyTorch's ``ignore_index``) wherever nothing is asked; the loss and the
accuracy count only the ``P`` query positions. The same seed gives the same tensors (for a given
torch version); weighted sampling without replacement uses the Gumbel-top-k trick, so nothing loops
over sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MQARTask", "make_mqar_task", "IGNORE"]

IGNORE = -100  # target of the positions that ask nothing (F.cross_entropy's default ignore_index)


@dataclass
class MQARTask:
    """Generated MQAR sequences (see the module docstring).

    ``tokens`` (N, L) int64; ``targets`` (N, L) int64, the value at each query position and
    :data:`IGNORE` elsewhere; ``keys``, ``values``, ``query_pos`` (N, P): pair j is ``keys[:, j]``
    at position ``2j`` and ``values[:, j]`` at ``2j + 1``, queried at ``query_pos[:, j]``.
    """

    tokens: torch.Tensor  # (N, L)
    targets: torch.Tensor  # (N, L)
    keys: torch.Tensor  # (N, P)
    values: torch.Tensor  # (N, P)
    query_pos: torch.Tensor  # (N, P)
    vocab_size: int
    power_a: float
    random_fillers: bool
    seed: int

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_pairs(self) -> int:
        return self.keys.shape[1]

    @property
    def chance_accuracy(self) -> float:
        """``1 / P``: a model that knows which ids are this sequence's values but recalls none of them."""
        return 1.0 / self.n_pairs

    def dataset(self) -> torch.utils.data.TensorDataset:
        """``(tokens, targets)`` pairs for a ``DataLoader``."""
        return torch.utils.data.TensorDataset(self.tokens, self.targets)

    def __repr__(self) -> str:
        return (f"MQARTask(N={len(self)}, L={self.tokens.shape[1]}, pairs={self.n_pairs}, V={self.vocab_size}, "
                f"power_a={self.power_a}, random_fillers={self.random_fillers}, seed={self.seed})")


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _distinct(gen: torch.Generator, n: int, k: int, low: int, high: int) -> torch.Tensor:
    """``(n, k)`` ids, distinct within each row, uniform over ``[low, high)`` (k of a random permutation)."""
    return torch.rand(n, high - low, generator=gen).topk(k, dim=1).indices + low  # (n, k)


def make_mqar_task(n_samples: int = 3000, length: int = 256, n_pairs: int = 16, *, vocab_size: int = 8192,
                   power_a: float = 0.01, random_fillers: bool = False, seed: int = 0) -> MQARTask:
    """Generate ``n_samples`` MQAR sequences of ``length`` tokens with ``n_pairs`` key-value pairs each.

    Needs ``length ≥ 4 · n_pairs`` (the pairs take ``2P`` positions and the ``P`` queries need ``P``
    distinct even offsets after them) and ``n_pairs ≤ V/2 − 1`` distinct keys. ``power_a`` in (0, 1]
    shapes the distance from the pairs to the queries; ``random_fillers`` picks the fillers (see the
    module docstring).
    """
    for name, value, low in (("n_samples", n_samples, 1), ("length", length, 4), ("n_pairs", n_pairs, 1),
                             ("vocab_size", vocab_size, 4), ("seed", seed, 0)):
        _check_int(name, value, low)
    if 4 * n_pairs > length:
        raise ValueError(f"n_pairs={n_pairs} needs length >= 4 * n_pairs = {4 * n_pairs} (2 tokens per pair and "
                         f"room for {n_pairs} queries), got length={length}; use fewer pairs or a longer sequence")
    half = vocab_size // 2
    if n_pairs > half - 1:
        raise ValueError(f"n_pairs={n_pairs} distinct keys need vocab_size >= 2 * (n_pairs + 1) = "
                         f"{2 * (n_pairs + 1)}, got vocab_size={vocab_size}")
    if isinstance(power_a, bool) or not isinstance(power_a, int | float) or not 0 < power_a <= 1:
        raise ValueError(f"power_a must be a number in (0, 1] (1 = queries placed uniformly), got {power_a!r}")
    if not isinstance(random_fillers, bool):
        raise ValueError(f"random_fillers must be True or False, got {random_fillers!r}")

    gen = torch.Generator().manual_seed(seed)
    N, L, P = n_samples, length, n_pairs
    rows = torch.arange(N)[:, None]  # (N, 1)
    keys = _distinct(gen, N, P, 1, half)  # (N, P)
    values = _distinct(gen, N, P, half, vocab_size)  # (N, P)

    # query gaps: P distinct g in [0, S) with weight (g + 1)^(a − 1), by Gumbel-top-k
    S = (L - 2 * P) // 2
    log_w = (power_a - 1) * torch.log(torch.arange(1, S + 1, dtype=torch.float64))  # (S,)
    u = torch.rand(N, S, generator=gen, dtype=torch.float64).clamp_min(1e-300)
    gaps = (log_w - torch.log(-torch.log(u))).topk(P, dim=1).indices  # (N, P)
    query_pos = 2 * P + 2 * gaps  # (N, P)

    if random_fillers:  # uniform over the V − P ids that are not this row's keys: the x-th free id is x + #keys ≤ it
        x = torch.randint(0, vocab_size - P, (N, L), generator=gen)  # (N, L)
        sorted_keys = keys.sort(dim=1).values
        tokens = x + torch.searchsorted(sorted_keys - torch.arange(P), x, right=True)  # (N, L)
    else:
        tokens = torch.zeros(N, L, dtype=torch.long)
    tokens[:, 0:2 * P:2] = keys
    tokens[:, 1:2 * P:2] = values
    tokens[rows, query_pos] = keys
    targets = torch.full((N, L), IGNORE, dtype=torch.long)
    targets[rows, query_pos] = values
    return MQARTask(tokens, targets, keys, values, query_pos, vocab_size, float(power_a), random_fillers, seed)
