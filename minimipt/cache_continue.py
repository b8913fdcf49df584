"""The cache's batched form continued from a streaming state: the held slots become a prefix.

Glossary (``minimipt/__init__.py``): B batch, L new tokens, K slots, S slots of the incoming state
(S = K, or the tokens seen for an unbounded cache), H heads, ``d_h`` head width.

The write/evict rule (:mod:`minimipt.cache`) is a state machine on the *held set* alone: whether a
new token is written, and which entry it evicts, depends only on the held entries' scores and their
order by position. Entries evicted earlier never come back (a position's rank only grows). So a
cache that holds the set ``{s_1 < … < s_n}`` (n ≤ K) after t₀ tokens continues exactly like a cache
that has seen only those n tokens, in that order. The batched form therefore runs on the sequence

    [ held entries, ordered by position  |  the L new tokens ]          (length S + L)

with the state's invalid slots placed first as tokens that are never written. Over this sequence
:func:`~minimipt.ops.eviction.eviction_times` gives every entry's eviction time (all n held entries are
written while the prefix is read, since n ≤ K), the attention paths read it as they read any sequence,
and the new tokens' outputs are the last L rows. :func:`eviction_times_from_reference` runs the
streaming rule from the held set as a loop (the slow twin). :func:`final_slots_from` keeps the slots
the held entries occupy in the state (not the order in which the prefix lists them), so the state
returned by a batched call equals the one ``step`` would hold, slot for slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .ops.eviction import eviction_times, final_slots
from .state import CacheState

__all__ = ["Prefix", "state_as_prefix", "eviction_times_from", "eviction_times_from_reference", "final_slots_from",
           "state_from_table"]


@dataclass
class Prefix:
    """A cache state's slots in position order (invalid slots first)."""

    k: torch.Tensor         # (B, S, H, d_h)
    v: torch.Tensor         # (B, S, H, d_h)
    log_w: torch.Tensor     # (B, S)
    eligible: torch.Tensor  # (B, S) bool: a held entry (only those can be written)
    pos: torch.Tensor       # (B, S) long, −1 for an empty slot
    slot: torch.Tensor      # (B, S) long: the state's slot of each entry


def state_as_prefix(state: CacheState) -> Prefix:
    """The held entries of ``state`` ordered by position (empty slots, ``pos = −1``, first)."""
    pos = torch.where(state.valid, state.pos, -1)
    slot = torch.argsort(pos, dim=1, stable=True)  # (B, S)

    def pick(x):
        idx = slot.view(slot.shape + (1,) * (x.dim() - 2)).expand(slot.shape + x.shape[2:])
        return x.gather(1, idx)

    return Prefix(pick(state.k), pick(state.v), pick(state.log_w), pick(state.valid), pick(pos), slot)


def eviction_times_from(prefix_log_w: torch.Tensor, prefix_eligible: torch.Tensor, log_w: torch.Tensor,
                        eligible: torch.Tensor, slots: int | None) -> torch.Tensor:
    """Eviction times over ``[prefix | new]`` (long ``(B, S + L)``, in the combined positions).

    ``prefix_log_w``, ``prefix_eligible``: ``(B, S)``, the held entries in position order (at most
    K eligible); ``log_w``, ``eligible``: ``(B, L)``, the new tokens.
    """
    return eviction_times(torch.cat([prefix_log_w.to(log_w.dtype), log_w], 1),
                          torch.cat([prefix_eligible, eligible], 1), slots)


@torch.no_grad()
def eviction_times_from_reference(prefix_log_w: torch.Tensor, prefix_eligible: torch.Tensor, log_w: torch.Tensor,
                                  eligible: torch.Tensor, slots: int | None) -> torch.Tensor:
    """:func:`eviction_times_from` as a loop: start from the held set, then apply the streaming rule
    (write while a slot is free; otherwise replace the lowest score, the oldest among equal ones,
    iff the new score is ``≥``) to each new token."""
    B, S = prefix_log_w.shape
    L = log_w.shape[1]
    w = torch.cat([prefix_log_w.to(log_w.dtype), log_w], 1).cpu()
    out = torch.arange(S + L).expand(B, S + L).clone()
    for b in range(B):
        held = [i for i in range(S) if prefix_eligible[b, i]]
        if slots is not None and len(held) > slots:
            raise ValueError(f"the prefix holds {len(held)} entries, more than slots={slots}")
        for i in held:
            out[b, i] = S + L
        for j in range(L):
            t = S + j
            if not eligible[b, j]:
                continue
            if slots is None or len(held) < slots:
                held.append(t)
                out[b, t] = S + L
                continue
            victim = min(held, key=lambda s: (w[b, s].item(), s))  # lowest score, oldest first
            if w[b, t].item() >= w[b, victim].item():
                held.remove(victim)
                out[b, victim] = t
                held.append(t)
                out[b, t] = S + L
    return out.to(log_w.device)


@torch.no_grad()
def final_slots_from(evict: torch.Tensor, slots: int, prefix_slot: torch.Tensor,
                     prefix_eligible: torch.Tensor) -> torch.Tensor:
    """Which combined position each of the K streaming slots holds after the last token: long
    ``(B, K)``, −1 = empty, with the held entries in the slots ``prefix_slot`` ``(B, S)`` they occupy
    in the state.

    :func:`~minimipt.ops.eviction.final_slots` gives the n held entries slots 0 … n − 1 in the order the
    prefix lists them, and every later token the slot it takes in the streaming form (the first free
    one, or its victim's). The state's n valid slots are 0 … n − 1 too, in another order: relabelling
    slot ``j < n`` as the state's slot of the j-th held entry gives the streaming layout.
    """
    B, S = prefix_slot.shape
    K = slots
    row = final_slots(evict, K)  # (B, K)
    rank = torch.cumsum(prefix_eligible, 1) - 1  # (B, S): the final_slots slot of each held entry
    held = prefix_eligible & (rank < K)
    relabel = torch.arange(K + 1, device=evict.device).expand(B, K + 1).clone()  # its slot → state slot
    relabel.scatter_(1, torch.where(held, rank, K), torch.where(held, prefix_slot, K))  # column K: a dump
    return torch.empty_like(row).scatter_(1, relabel[:, :K], row)


def state_from_table(row: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor,
                     pos: torch.Tensor, t: torch.Tensor, slots: int | None, dtype: torch.dtype) -> CacheState:
    """The :class:`CacheState` in ``dtype`` whose slot j holds combined position ``row[:, j]`` (−1: empty).

    ``row``: long ``(B, K)``; ``k, v``: ``(B, S + L, H, d_h)``; ``log_w``, ``pos``: ``(B, S + L)``.
    Only the K gathered rows are cast, never the whole sequence.
    """
    B, K = row.shape
    idx = row.clamp(min=0)
    valid = row >= 0
    kk = k.gather(1, idx[:, :, None, None].expand(B, K, *k.shape[2:])).to(dtype)
    vv = v.gather(1, idx[:, :, None, None].expand(B, K, *v.shape[2:])).to(dtype)
    zero = torch.zeros((), dtype=dtype, device=k.device)
    lw = log_w.gather(1, idx).to(CacheState.score_dtype(dtype))
    return CacheState(k=torch.where(valid[..., None, None], kk, zero), v=torch.where(valid[..., None, None], vv, zero),
                      log_w=torch.where(valid, lw, 0), valid=valid,
                      pos=torch.where(valid, pos.gather(1, idx), -1), t=t, slots=slots)
