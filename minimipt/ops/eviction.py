"""Which positions the causal cache holds, computed for a whole sequence at once.

Position s is held at t iff ``s ≤ t < e_s``: :func:`eviction_times` gives every ``e_s`` (the rule
and the rank formula behind it are in :mod:`minimipt.cache`), :func:`eviction_times_pairwise`
evaluates the rank formula directly in O(L²), and :func:`minimipt.ops.reference.eviction_times_reference`
runs the streaming rule as a loop (the slow twin the tests compare both with). :func:`slot_table`
gives the streaming slot each held position occupies.
"""

from __future__ import annotations

import math

import torch

__all__ = ["eviction_times", "eviction_times_pairwise", "slot_table", "final_slots"]


@torch.no_grad()
def eviction_times(log_w: torch.Tensor, eligible: torch.Tensor, slots: int | None, block: int = 16) -> torch.Tensor:
    """Eviction time ``e_s`` of every position: s is held at t iff ``s ≤ t < e_s``.

    ``log_w``: ``(B, L)``; ``eligible``: bool ``(B, L)``; returns long ``(B, L)`` with ``e_s = s``
    for positions never written and ``e_s = L`` for positions never evicted.

    Each position gets an integer key, its rank in the order by ``(w_s, s)`` (a stable sort, so
    ties go to the later position), and ``rank_t(s) < K`` becomes ``key_s ≥ m_t`` with ``m_t`` the
    K-th largest key among the eligible ``r ≤ t``. ``m_t`` never decreases, so ``e_s`` is a
    ``searchsorted`` of ``key_s``. The prefix top-K behind ``m_t`` is built in blocks of
    ``block`` positions: a doubling (Hillis–Steele) merge inside each block (log₂ block steps), the
    same across the blocks' totals, then one merge of each position's in-block prefix with the
    blocks before it — O(L·K·(log₂ block + 1)) work on the full length instead of O(L·K·log₂ L).
    :func:`eviction_times_pairwise` evaluates the rank formula directly, in O(L²).
    """
    B, L = log_w.shape
    pos = torch.arange(L, device=log_w.device).expand(B, L)
    if slots is None or slots >= L:
        return torch.where(eligible, L, pos)
    K = slots
    order = torch.argsort(log_w, dim=1, stable=True)  # ascending (w_s, s)
    key = torch.empty_like(order).scatter_(1, order, pos)  # (B, L) unique keys in [0, L)
    key = torch.where(eligible, key, -1).to(torch.int32)
    C = block
    n = -(-L // C)
    padded = torch.cat([key, key.new_full((B, n * C - L), -1)], 1).view(B, n, C)  # −1: not eligible
    top = padded.new_full((B, n, C, K), -1)  # prefix top-K inside each block, descending
    top[..., 0] = padded
    top = _prefix_top_k(top, dim=2)
    before = _prefix_top_k(top[:, :, -1], dim=1)  # (B, n, K): top-K of blocks 0..i
    before = torch.cat([before.new_full((B, 1, K), -1), before[:, :-1]], 1)  # of blocks 0..i−1
    top = torch.cat([top, before[:, :, None].expand(B, n, C, K)], -1).topk(K, dim=-1).values
    kth = top.view(B, n * C, K)[:, :L, K - 1].long().contiguous()  # (B, L) m_t, −1 while < K eligible
    e = torch.searchsorted(kth, key.long().contiguous(), right=True)  # first t with m_t > key_s
    return torch.where(eligible, torch.maximum(e, pos), pos)


def _prefix_top_k(top: torch.Tensor, dim: int) -> torch.Tensor:
    """Inclusive prefix top-K along ``dim`` of per-position descending top-K lists (last dim, K):
    ``top_t ← topK(top_t ∪ top_{t−shift})`` for shift = 1, 2, 4, … (Hillis–Steele)."""
    K, n = top.shape[-1], top.shape[dim]
    shift = 1
    while shift < n:
        merged = torch.cat([top.narrow(dim, shift, n - shift), top.narrow(dim, 0, n - shift)], -1).topk(K, dim=-1).values
        top = torch.cat([top.narrow(dim, 0, shift), merged], dim)
        shift *= 2
    return top


@torch.no_grad()
def eviction_times_pairwise(log_w: torch.Tensor, eligible: torch.Tensor, slots: int | None,
                            max_elements: int = 1 << 24) -> torch.Tensor:
    """:func:`eviction_times` straight from the rank formula: O(L²) comparisons in row chunks."""
    B, L = log_w.shape
    pos = torch.arange(L, device=log_w.device)
    if slots is None:
        return torch.where(eligible, torch.full_like(pos, L), pos).expand(B, L).clone()
    out = torch.empty(B, L, dtype=torch.long, device=log_w.device)
    w_r, el_r = log_w[:, None, :], eligible[:, None, :]  # (B, 1, L) the competitors r
    rows = max(1, max_elements // max(1, B * L))
    for s0 in range(0, L, rows):
        s = pos[s0:s0 + rows]  # (S,)
        w_s = log_w[:, s0:s0 + rows, None]  # (B, S, 1)
        before = pos[None, :] < s[:, None]  # (S, L): r < s
        after = pos[None, :] > s[:, None]  # (S, L): r > s
        n_above = (el_r & before & (w_r > w_s)).sum(-1)  # (B, S): #{r < s: w_r > w_s}
        n_catch = torch.cumsum(el_r & after & (w_r >= w_s), dim=-1, dtype=torch.int32)  # (B, S, L)
        held = (n_above[..., None] + n_catch < slots) & ~before  # (B, S, L): held at t (for t ≥ s)
        e = s + held.sum(-1)  # rank only grows with t, so the held times are [s, e_s)
        out[:, s0:s0 + rows] = torch.where(eligible[:, s0:s0 + rows], e, s)
    return out


@torch.no_grad()
def _slot_of_each_token(evict: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pos``, ``written`` and ``slot`` ``(B, L)``: each written token's streaming slot.

    Written tokens fill slots 0, 1, … in order while the cache has room; afterwards the token
    written at t takes the slot of the entry it evicts (the s with ``e_s = t``). Pointer jumping
    along these links finds the first token of each chain, whose slot is its index among written tokens.
    """
    B, L = evict.shape
    pos = torch.arange(L, device=evict.device).expand(B, L)
    written = evict > pos  # (B, L)
    order = torch.cumsum(written, dim=1) - 1  # (B, L) index among written tokens
    link = torch.cat([pos, pos[:, :1]], dim=1).clone()  # (B, L + 1); column L is a dump
    evicted = written & (evict < L)
    link.scatter_(1, torch.where(evicted, evict, L), pos)  # link[e_s] = s
    link = link[:, :L]
    for _ in range(max(1, math.ceil(math.log2(max(L, 2)))) + 1):
        link = link.gather(1, link)  # → the first token of the chain (it filled a free slot)
    return pos, written, order.gather(1, link)


def slot_table(evict: torch.Tensor, slots: int) -> torch.Tensor:
    """Which position each of the K streaming slots holds at every t: long ``(B, L, K)``, −1 = empty.
    Each written token takes its slot (:func:`_slot_of_each_token`); a cumulative max over time gives
    the occupant."""
    B, L = evict.shape
    K = slots
    pos, written, slot = _slot_of_each_token(evict)
    table = torch.full((B, L, K + 1), -1, dtype=torch.long, device=evict.device)
    table.scatter_(2, torch.where(written, slot, K)[..., None], pos[..., None])
    return table[..., :K].cummax(dim=1).values  # (B, L, K) latest token written into each slot


def final_slots(evict: torch.Tensor, slots: int) -> torch.Tensor:
    """``slot_table(evict, slots)[:, -1]`` without the table: long ``(B, K)``, the position each slot
    holds after the last token (−1 = empty). The occupant of a slot at the end is the token written
    into it that is never evicted (``e_s = L``)."""
    B, L = evict.shape
    pos, written, slot = _slot_of_each_token(evict)
    kept = written & (evict >= L)
    row = torch.full((B, slots + 1), -1, dtype=torch.long, device=evict.device)
    return row.scatter_(1, torch.where(kept, slot, slots), pos)[:, :slots]
