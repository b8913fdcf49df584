"""The cache's eviction times (minimipt.ops.eviction): the blocked prefix top-K and the pairwise rank
formula equal the streaming rule run as a loop, ties included, and the held set is the causal top K."""

from __future__ import annotations

import pytest
import torch

from minimipt.ops.eviction import eviction_times, eviction_times_pairwise, final_slots, slot_table
from minimipt.ops.reference import eviction_times_reference
from tests._support import log_w_scores


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("slots", [None, 1, 2, 4, 9, 30])
def test_eviction_times_match_streaming_loop(slots, ties):
    gen = torch.Generator().manual_seed(1 + (slots or 0) + 100 * ties)
    for _ in range(20):
        L = int(torch.randint(1, 24, (1,), generator=gen))
        log_w = log_w_scores(3, L, ties, gen)
        eligible = torch.rand(3, L, generator=gen) > 0.3
        ref = eviction_times_reference(log_w, eligible, slots)
        assert torch.equal(eviction_times(log_w, eligible, slots), ref)
        assert torch.equal(eviction_times_pairwise(log_w, eligible, slots, max_elements=17), ref)  # small chunks


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("slots", [1, 3, 8, 30])
def test_final_slots_is_the_last_row_of_the_slot_table(slots, ties):
    gen = torch.Generator().manual_seed(7 + slots + 100 * ties)
    for L in (1, 5, 40, 200):
        log_w = log_w_scores(4, L, ties, gen)
        evict = eviction_times(log_w, torch.rand(4, L, generator=gen) > 0.3, slots)
        assert torch.equal(final_slots(evict, slots), slot_table(evict, slots)[:, -1])


@pytest.mark.parametrize("block", [1, 4, 16])
def test_eviction_times_over_many_blocks_match_the_rank_formula(block):
    """Long rows (many blocks of the prefix top-K, a ragged last one), ties and ineligible tokens."""
    gen = torch.Generator().manual_seed(block)
    for K in (1, 7, 40):
        log_w = log_w_scores(2, 203, True, gen)
        eligible = torch.rand(2, 203, generator=gen) > 0.3
        ref = eviction_times_pairwise(log_w, eligible, K)
        assert torch.equal(eviction_times(log_w, eligible, K, block=block), ref)


def test_held_set_is_causal_top_k():
    """At every t the held positions are exactly the top-K eligible s ≤ t by (w_s, s)."""
    gen = torch.Generator().manual_seed(3)
    L, K = 20, 4
    log_w = log_w_scores(2, L, True, gen)
    eligible = torch.rand(2, L, generator=gen) > 0.2
    e = eviction_times(log_w, eligible, K)
    for b in range(2):
        for t in range(L):
            held = {s for s in range(t + 1) if s < e[b, s] and t < e[b, s]}
            cands = sorted((s for s in range(t + 1) if eligible[b, s]), key=lambda s: (log_w[b, s].item(), s))
            assert held == set(cands[-K:])
            assert len(held) <= K and all(s <= t for s in held)
