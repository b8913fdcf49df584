"""The causal sparse KV cache: MIPT's recall mechanism, the same in training and in streaming.

Glossary (see ``minimipt/__init__.py``): B batch, L length, D state channels, d model width,
K cache slots, H heads, ``d_h = d / H`` head width.

**Write score.** Per token and layer, from the layer's measurement rates ``p_t ∈ (0, 1)^D``
(``log p`` comes from ``logsigmoid``, so nothing underflows)::

    w_t = mean_d p_t[d],        log w_t = logsumexp_d(log p_t[d]) − log D

A token is *eligible* when ``w_t ≥ τ`` (``write_threshold``; ``τ = 0``: every token is).

**Which tokens the cache holds (causal top-K).** At position t the cache holds the (at most) K
eligible positions ``s ≤ t`` with the largest ``w_s``; ties go to the more recent position. In
streaming terms: while a slot is free every eligible token is written; when all K are full a new
eligible token replaces the lowest-score entry (the oldest among equal lowest) iff its score is
``≥`` that entry's, otherwise it is not written. ``K = None`` keeps every eligible token
(unbounded: with ``τ > 0`` this is the paper's "threshold-only" write rule and the sparsity
experiment); ``K = 0`` means no cache at all (the models then build none).

The batched form needs, for every position s, its *eviction time* ``e_s``. With only eligible
``r`` counted, s's rank among positions ``0..t`` is::

    rank_t(s) = #{r < s : w_r > w_s} + #{s < r ≤ t : w_r ≥ w_s}

s is in the cache at t iff s is eligible, ``s ≤ t`` and ``rank_t(s) < K``. ``rank_t(s)`` never
decreases with t, so each position is held on one interval ``[s, e_s)`` (``e_s = s``: never
written; ``e_s = L``: never evicted). :func:`eviction_times` computes ``e`` with a blocked prefix top-K
(O(L·K) per merge, a few merges) and a binary search, no gradient; :func:`eviction_times_pairwise` evaluates the rank
formula as an O(L²) comparison; :func:`eviction_times_reference` is the streaming rule run as a
Python loop (the slow twin). Tests check that all three agree, ties included. Because one entry is evicted by each
write into a full cache, the write that evicts s is at ``e_s``; following these links gives every
written token the slot it occupies in the streaming form (:func:`slot_table`: pointer jumping,
O(L log L)). The batched form therefore holds *the same slots* as the streaming form.

**Reading.** Queries, keys and values come from the layer's normalised input ``x̂`` (not from
``Re h`` as the author's code does: ``x̂`` carries the token itself, which is what exact recall
needs, while ``Re h`` is already a blend of the past)::

    q_t = W_q x̂_t,   k_s = W_k x̂_s,   v_s = W_v x̂_s          (H heads of width d_h)
    ℓ_{t,s} = q_t·k_s / √d_h + log w_s        for s held at t;   ℓ_{t,∅} = 0  (null sink)
    a_t = softmax over {held s} ∪ {∅} of ℓ_t;   attn_t = Σ_s a_{t,s} v_s   (the sink's value is 0)
    r_t = σ(W_g x̂_t + b_g) ⊙ W_o attn_t                                   (B, L, d)

and the block adds ``r_t`` to ``Re h_t``. The null sink (zero key, zero value, logit 0) is in both
forms: a row with no entry reads 0 instead of NaN, and the weight of the cache relative to
"nothing" depends on ``log w_s`` — so ``p_t`` gets a gradient through the cache (the top-K choice
itself is discrete and gets none). ``write_penalty`` (optional) is an L1 penalty
``λ · mean_t w_t`` that a training loop can add (:attr:`CausalSparseCache.last_write_rate`).

Three batched attention paths compute the same function (tests compare values and gradients):
:func:`cache_attention_dense` (materialised ``(B, H, L, L)`` logits; any K, the reference),
:func:`cache_attention_blocked` (blocks of C queries over the ≤ K slots held before the block plus
the block itself: O(L·(K + C)), finite K) and :func:`cache_attention_slots` (gathers the K slots of
every position: O(L·K·d_h), time-chunked with recomputation in the backward pass when long).
``method="auto"`` takes dense while ``L ≤ K + C`` (and for unbounded K), blocked beyond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "CausalSparseCache",
    "CacheStats",
    "write_scores",
    "eligible_mask",
    "eviction_times",
    "eviction_times_reference",
    "eviction_times_pairwise",
    "slot_table",
    "cache_attention_dense",
    "cache_attention_slots",
    "cache_attention_blocked",
    "check_cache_slots",
]

_NEG_INF = float("-inf")


def check_cache_slots(cache_slots) -> None:
    """``cache_slots`` must be ``None`` (unbounded) or an int ``≥ 0`` (0: no cache)."""
    if cache_slots is not None and (isinstance(cache_slots, bool) or not isinstance(cache_slots, int)
                                    or cache_slots < 0):
        raise ValueError(f"cache_slots must be an int >= 0 (0 disables the cache) or None (unbounded); "
                         f"got {cache_slots!r}")


# ----------------------------------------------------------------------------------------------
# write scores and which positions are held
# ----------------------------------------------------------------------------------------------

def write_scores(log_p: torch.Tensor) -> torch.Tensor:
    """``log w = logsumexp_d(log p) − log D``: ``(..., D)`` → ``(...)`` in float32 (or float64)."""
    log_p = log_p if log_p.dtype in (torch.float32, torch.float64) else log_p.float()
    return torch.logsumexp(log_p, dim=-1) - math.log(log_p.shape[-1])


def eligible_mask(log_w: torch.Tensor, threshold: float) -> torch.Tensor:
    """``w ≥ τ`` as a bool tensor (all True for ``τ = 0``)."""
    if threshold <= 0:
        return torch.ones_like(log_w, dtype=torch.bool)
    return log_w >= math.log(threshold)


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
def eviction_times_reference(log_w: torch.Tensor, eligible: torch.Tensor, slots: int | None) -> torch.Tensor:
    """The streaming write/evict rule as a plain loop (slow twin of :func:`eviction_times`)."""
    B, L = log_w.shape
    out = torch.arange(L).expand(B, L).clone()
    for b in range(B):
        held: list[int] = []
        for t in range(L):
            if not eligible[b, t]:
                continue
            w = log_w[b, t].item()
            if slots is None or len(held) < slots:
                held.append(t)
                out[b, t] = L
                continue
            victim = min(held, key=lambda s: (log_w[b, s].item(), s))  # lowest score, oldest first
            if w >= log_w[b, victim].item():
                held.remove(victim)
                out[b, victim] = t
                held.append(t)
                out[b, t] = L
    return out.to(log_w.device)


@torch.no_grad()
def slot_table(evict: torch.Tensor, slots: int) -> torch.Tensor:
    """Which position each of the K streaming slots holds at every t: long ``(B, L, K)``, −1 = empty.

    Written tokens fill slots 0, 1, … in order while the cache has room; afterwards the token
    written at t takes the slot of the entry it evicts (the s with ``e_s = t``). Pointer jumping
    along these links finds each token's slot; a cumulative max over time gives the occupant.
    """
    B, L = evict.shape
    K = slots
    pos = torch.arange(L, device=evict.device).expand(B, L)
    written = evict > pos  # (B, L)
    order = torch.cumsum(written, dim=1) - 1  # (B, L) index among written tokens
    link = torch.cat([pos, pos[:, :1]], dim=1).clone()  # (B, L + 1); column L is a dump
    evicted = written & (evict < L)
    link.scatter_(1, torch.where(evicted, evict, L), pos)  # link[e_s] = s
    link = link[:, :L]
    for _ in range(max(1, math.ceil(math.log2(max(L, 2)))) + 1):
        link = link.gather(1, link)  # → the first token of the chain (it filled a free slot)
    slot = order.gather(1, link)  # (B, L)
    table = torch.full((B, L, K + 1), -1, dtype=torch.long, device=evict.device)
    table.scatter_(2, torch.where(written, slot, K)[..., None], pos[..., None])
    return table[..., :K].cummax(dim=1).values  # (B, L, K) latest token written into each slot


# ----------------------------------------------------------------------------------------------
# attention over the held positions (+ null sink)
# ----------------------------------------------------------------------------------------------

def _softmax_with_sink(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim with one extra logit 0 (the null sink) whose weight is dropped."""
    ext = torch.cat([logits, logits.new_zeros(logits.shape[:-1] + (1,))], dim=-1)
    if ext.dtype not in (torch.float32, torch.float64):
        ext = ext.float()  # half precision logits: softmax in float32
    return torch.softmax(ext, dim=-1)[..., :-1]


def cache_attention_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor,
                          evict: torch.Tensor, slots: int | None = None) -> torch.Tensor:
    """Reference: masked attention with materialised ``(B, H, L, L)`` logits.

    ``q, k, v``: ``(B, L, H, d_h)``; ``log_w``: ``(B, L)``; ``evict``: ``(B, L)`` from
    :func:`eviction_times` (it alone defines what is held, so ``slots`` is unused). → ``(B, L, H, d_h)``.
    """
    B, L, H, dh = q.shape
    pos = torch.arange(L, device=q.device)
    held = (pos[None, :, None] >= pos[None, None, :]) & (pos[None, :, None] < evict[:, None, :])  # (B, t, s)
    logits = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(dh) + log_w[:, None, None, :]
    logits = logits.masked_fill(~held[:, None], _NEG_INF)  # (B, H, L, L)
    a = _softmax_with_sink(logits).to(v.dtype)
    return torch.einsum("bhts,bshd->bthd", a, v)


def _attend_gathered(q, k, v, log_w, table):
    """Attention of ``q`` ``(B, T, H, d_h)`` over the slots ``table`` ``(B, T, K)`` of ``k, v``."""
    B, T, K = table.shape
    H, dh = k.shape[2], k.shape[3]
    idx = table.clamp(min=0).reshape(B, T * K)
    kk = k.gather(1, idx[:, :, None, None].expand(B, T * K, H, dh)).view(B, T, K, H, dh)
    vv = v.gather(1, idx[:, :, None, None].expand(B, T * K, H, dh)).view(B, T, K, H, dh)
    bias = log_w.gather(1, idx).view(B, T, K).masked_fill(table < 0, _NEG_INF)  # (B, T, K)
    logits = torch.einsum("bthd,btkhd->bthk", q, kk) / math.sqrt(dh) + bias[:, :, None, :]
    a = _softmax_with_sink(logits).to(v.dtype)  # (B, T, H, K)
    return torch.einsum("bthk,btkhd->bthd", a, vv)


def cache_attention_slots(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor,
                          evict: torch.Tensor, slots: int | None = None, chunk: int | None = None) -> torch.Tensor:
    """Fast path: each position attends over its ≤ K slots (:func:`slot_table`), O(L·K) memory.

    Same arguments and result as :func:`cache_attention_dense`; ``slots`` must be a finite K.
    Long inputs are processed ``chunk`` positions at a time (default: about 2²⁶ gathered
    key elements per chunk) and, when gradients are needed, recomputed in the backward pass (so
    the gathered keys are never all stored).
    """
    if slots is None:
        raise ValueError("cache_attention_slots needs a finite number of slots; use cache_attention_dense "
                         "for cache_slots=None")
    B, L, H, dh = q.shape
    table = slot_table(evict, min(slots, L))  # (B, L, K)
    chunk = chunk or max(1, (1 << 26) // (B * table.shape[2] * H * dh))
    if L <= chunk:
        return _attend_gathered(q, k, v, log_w, table)
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, log_w))
    outs = []
    for t0 in range(0, L, chunk):
        args = (q[:, t0:t0 + chunk], k, v, log_w, table[:, t0:t0 + chunk])
        outs.append(checkpoint(_attend_gathered, *args, use_reentrant=False) if grad else _attend_gathered(*args))
    return torch.cat(outs, dim=1)


def cache_attention_blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor,
                            evict: torch.Tensor, slots: int | None = None, chunk: int | None = None) -> torch.Tensor:
    """Blocked path: queries in blocks of ``C`` (``chunk``, default ``max(K, 16)``) positions, each
    block attending over ``K + C`` candidates with batched matrix products.

    Same arguments and result as :func:`cache_attention_dense`; ``slots`` must be a finite K. Each
    position is held on one interval ``[s, e_s)``, so a position ``s < c₀`` read anywhere in the
    block ``[c₀, c₀ + C)`` is already held at ``c₀ − 1``: the block's candidates are the ≤ K slots
    held at ``c₀ − 1`` (:func:`slot_table`) and the block's own C positions, masked by
    ``s ≤ t < e_s`` as in the dense path. Logits ``(B, L/C, H, C, K + C)``: O(L·(K + C)) memory and
    work, one gather of K keys per block instead of K per position (:func:`cache_attention_slots`).
    """
    if slots is None:
        raise ValueError("cache_attention_blocked needs a finite number of slots; use cache_attention_dense "
                         "for cache_slots=None")
    B, L, H, dh = q.shape
    K = min(slots, L)
    C = chunk or max(K, 16)
    n = -(-L // C)  # blocks
    pad = n * C - L
    pos = torch.arange(n * C, device=q.device)
    if pad:  # padded keys are never held (e_s = s); padded queries are dropped below
        q, k, v = (torch.cat([x, x.new_zeros(B, pad, H, dh)], 1) for x in (q, k, v))
        log_w = torch.cat([log_w, log_w.new_zeros(B, pad)], 1)
        evict = torch.cat([evict, pos[L:].expand(B, pad)], 1)
    # the slots held just before each block (none before the first): (B, n, K), −1 = empty
    table = slot_table(evict[:, :L], K)
    prev = torch.cat([table.new_full((B, 1, K), -1), table[:, C - 1:(n - 1) * C:C]], 1)
    cand = torch.cat([prev, pos.view(n, C).expand(B, n, C)], 2)  # (B, n, K + C) candidate positions
    idx = cand.clamp(min=0).reshape(B, n * (K + C))

    def pick(x):  # (B, L', H, d_h) → (B, n, K + C, H, d_h)
        return x.gather(1, idx[:, :, None, None].expand(-1, -1, H, dh)).view(B, n, K + C, H, dh)

    t = pos.view(1, n, C, 1)  # query positions
    held = (cand[:, :, None, :] >= 0) & (cand[:, :, None, :] <= t) & (t < evict.gather(1, idx).view(B, n, 1, K + C))
    bias = log_w.gather(1, idx).view(B, n, 1, 1, K + C)
    logits = torch.einsum("bnchd,bnjhd->bnhcj", q.view(B, n, C, H, dh), pick(k)) / math.sqrt(dh) + bias
    logits = logits.masked_fill(~held[:, :, None], _NEG_INF)  # (B, n, H, C, K + C)
    a = _softmax_with_sink(logits).to(v.dtype)
    out = torch.einsum("bnhcj,bnjhd->bnchd", a, pick(v))  # (B, n, C, H, d_h)
    return out.reshape(B, n * C, H, dh)[:, :L]


_METHODS = {"dense": cache_attention_dense, "slots": cache_attention_slots, "blocked": cache_attention_blocked}


# ----------------------------------------------------------------------------------------------
# the module
# ----------------------------------------------------------------------------------------------

@dataclass
class CacheStats:
    """Per-sequence counts from the last batched forward (long tensors of shape ``(B,)``).

    ``written``: tokens that entered the cache; ``held``: slots occupied at the last (non-pad)
    position; ``eligible``: tokens with ``w ≥ τ``; ``length``: tokens counted.
    """

    written: torch.Tensor
    held: torch.Tensor
    eligible: torch.Tensor
    length: torch.Tensor


class CausalSparseCache(nn.Module):
    """A per-layer causal sparse KV cache of ``slots`` entries read by ``heads``-head attention.

    Args:
        d_model: width ``d`` of ``x̂``.
        slots: K ≥ 1, or ``None`` for unbounded.
        heads: H (must divide ``d_model``).
        write_threshold: τ ∈ [0, 1]; tokens with ``w < τ`` are never written.
        method: batched attention path: ``"auto"`` (the cheaper for the length, see :meth:`path`),
            ``"blocked"``, ``"slots"`` or ``"dense"``.
        gate_bias: initial ``b_g`` of the read-out gate.
    """

    def __init__(self, d_model: int, slots: int | None = 16, *, heads: int = 4, write_threshold: float = 0.0,
                 method: str = "auto", gate_bias: float = 0.0):
        super().__init__()
        check_cache_slots(slots)
        if slots == 0:
            raise ValueError("CausalSparseCache needs slots >= 1 or None; cache_slots=0 means 'no cache' "
                             "and the models then build none")
        if not isinstance(heads, int) or heads <= 0 or d_model % heads:
            raise ValueError(f"cache_heads must be a positive int dividing d_model={d_model}; got {heads!r}")
        if not 0.0 <= float(write_threshold) <= 1.0:
            raise ValueError(f"write_threshold must lie in [0, 1] (a bound on the mean rate w); got {write_threshold}")
        if method not in ("auto", *_METHODS):
            raise ValueError(f"method must be 'auto', 'blocked', 'slots' or 'dense'; got {method!r}")
        if method in ("slots", "blocked") and slots is None:
            raise ValueError(f"method={method!r} needs a finite number of slots; use 'dense' or 'auto' for slots=None")
        self.d_model, self.slots, self.heads = d_model, slots, heads
        self.head_dim = d_model // heads
        self.write_threshold, self.method = float(write_threshold), method
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)  # [q | k | v]
        self.out_proj = nn.Linear(d_model, d_model)
        self.gate = nn.Linear(d_model, d_model)
        with torch.no_grad():
            self.gate.bias.fill_(gate_bias)
        self.last_stats: CacheStats | None = None
        self.last_write_rate: torch.Tensor | None = None  # mean w of the last forward (with gradient)

    def path(self, length: int) -> str:
        """The batched attention path used for sequences of ``length`` tokens.

        ``"auto"``: ``"dense"`` for unbounded K, and while its ``L²`` logits per head are no more than
        the blocked path's ``L·(K + C)`` (``C = max(K, 16)``), i.e. ``L ≤ K + C``; ``"blocked"``
        beyond (O(L·(K + C)), batched matrix products). ``"slots"`` (a gather of K keys per
        position) is only taken when asked for. All three compute the same function (tests compare
        them)."""
        if self.method != "auto":
            return self.method
        K = self.slots
        if K is None or length <= K + max(K, 16):
            return "dense"
        return "blocked"

    def _qkv(self, xh: torch.Tensor):
        q, k, v = self.qkv(xh).chunk(3, dim=-1)
        shape = xh.shape[:-1] + (self.heads, self.head_dim)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def _read_out(self, xh: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        attn = attn.reshape(attn.shape[:-2] + (self.d_model,)).to(xh.dtype)
        return torch.sigmoid(self.gate(xh)) * self.out_proj(attn)

    def forward(self, xh: torch.Tensor, log_p: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Batched form. ``xh``: ``(B, L, d)``; ``log_p``: ``(B, L, D)`` → ``r`` ``(B, L, d)``.

        ``lengths`` ``(B,)`` (optional): real tokens per sequence (right padding), for the stats.
        """
        B, L, _ = xh.shape
        log_w = write_scores(log_p)  # (B, L)
        eligible = eligible_mask(log_w, self.write_threshold)
        evict = eviction_times(log_w.detach(), eligible, self.slots)  # (B, L)
        q, k, v = self._qkv(xh)  # (B, L, H, d_h)
        attn = _METHODS[self.path(L)](q, k, v, log_w, evict, self.slots)  # (B, L, H, d_h)
        self._record(log_w, eligible, evict, lengths)
        return self._read_out(xh, attn)

    def _record(self, log_w, eligible, evict, lengths):
        B, L = log_w.shape
        pos = torch.arange(L, device=log_w.device)
        n = torch.full((B,), L, device=log_w.device, dtype=torch.long) if lengths is None else lengths.long()
        inside = pos[None, :] < n[:, None]  # (B, L)
        last = (n - 1).clamp(min=0)[:, None]
        self.last_write_rate = (log_w.exp() * inside).sum() / inside.sum().clamp(min=1)
        with torch.no_grad():
            self.last_stats = CacheStats(
                written=((evict > pos) & inside).sum(1),
                held=((evict > pos) & (pos <= last) & (evict > last) & inside).sum(1),
                eligible=(eligible & inside).sum(1),
                length=n,
            )

    # ------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype: torch.dtype | None = None) -> dict:
        """Empty cache: K slots (0 entries that grow for ``slots=None``)."""
        ref = self.qkv.weight
        device, dtype = device or ref.device, dtype or ref.dtype
        K = 0 if self.slots is None else self.slots
        B, H, dh = batch_size, self.heads, self.head_dim
        return {"k": torch.zeros(B, K, H, dh, device=device, dtype=dtype),
                "v": torch.zeros(B, K, H, dh, device=device, dtype=dtype),
                "log_w": torch.zeros(B, K, device=device, dtype=torch.float32),
                "valid": torch.zeros(B, K, device=device, dtype=torch.bool),
                "pos": torch.full((B, K), -1, device=device, dtype=torch.long),
                "t": 0}

    def step(self, xh_t: torch.Tensor, log_p_t: torch.Tensor, state: dict):
        """Streaming form. ``xh_t``: ``(B, d)``; ``log_p_t``: ``(B, D)`` → ``(r_t (B, d), new state)``.

        Write (or not) by the rule in the module docstring, then attend over valid slots + sink.
        """
        q, k, v = self._qkv(xh_t)  # (B, H, d_h)
        lw = write_scores(log_p_t).to(state["log_w"].dtype)  # (B,)
        elig = eligible_mask(lw, self.write_threshold)  # (B,)
        t = state["t"]
        tpos = torch.full_like(lw, t, dtype=torch.long)
        K_k, K_v, S_w, S_ok, S_pos = state["k"], state["v"], state["log_w"], state["valid"], state["pos"]
        if self.slots is None:  # unbounded: append (invalid when not eligible)
            K_k = torch.cat([K_k, k[:, None].to(K_k.dtype)], 1)
            K_v = torch.cat([K_v, v[:, None].to(K_v.dtype)], 1)
            S_w, S_ok = torch.cat([S_w, lw[:, None]], 1), torch.cat([S_ok, elig[:, None]], 1)
            S_pos = torch.cat([S_pos, tpos[:, None]], 1)
        else:
            K = self.slots
            free = ~S_ok  # (B, K)
            has_free = free.any(1)
            first_free = free.to(torch.int8).argmax(1)  # first empty slot
            low = torch.where(S_ok, S_w, torch.full_like(S_w, float("inf"))).min(1).values  # (B,)
            tied = S_ok & (S_w == low[:, None])
            big = torch.iinfo(torch.long).max
            victim = torch.where(tied, S_pos, torch.full_like(S_pos, big)).argmin(1)  # oldest lowest
            slot = torch.where(has_free, first_free, victim)  # (B,)
            write = elig & (has_free | (lw >= low))  # (B,)
            hit = (torch.arange(K, device=slot.device)[None] == slot[:, None]) & write[:, None]  # (B, K)
            K_k = torch.where(hit[..., None, None], k[:, None].to(K_k.dtype), K_k)
            K_v = torch.where(hit[..., None, None], v[:, None].to(K_v.dtype), K_v)
            S_w = torch.where(hit, lw[:, None], S_w)
            S_ok = S_ok | hit
            S_pos = torch.where(hit, tpos[:, None], S_pos)
        logits = torch.einsum("bhd,bkhd->bhk", q, K_k.to(q.dtype)) / math.sqrt(self.head_dim)
        logits = (logits + S_w[:, None, :]).masked_fill(~S_ok[:, None, :], _NEG_INF)  # (B, H, K)
        a = _softmax_with_sink(logits).to(K_v.dtype)
        attn = torch.einsum("bhk,bkhd->bhd", a, K_v)  # (B, H, d_h)
        new = {"k": K_k, "v": K_v, "log_w": S_w, "valid": S_ok, "pos": S_pos, "t": t + 1}
        return self._read_out(xh_t, attn), new

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, slots={self.slots}, heads={self.heads}, "
                f"write_threshold={self.write_threshold}, method={self.method!r}")
