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

The batched form needs, for every position s, its *eviction time* ``e_s`` (:mod:`minimipt.ops.eviction`). With only eligible
``r`` counted, s's rank among positions ``0..t`` is::

    rank_t(s) = #{r < s : w_r > w_s} + #{s < r ≤ t : w_r ≥ w_s}

s is in the cache at t iff s is eligible, ``s ≤ t`` and ``rank_t(s) < K``. ``rank_t(s)`` never
decreases with t, so each position is held on one interval ``[s, e_s)`` (``e_s = s``: never
written; ``e_s = L``: never evicted). :func:`~minimipt.ops.eviction.eviction_times` computes ``e`` with a blocked prefix top-K
(O(L·K) per merge, a few merges) and a binary search, no gradient; :func:`~minimipt.ops.eviction.eviction_times_pairwise` evaluates the rank
formula as an O(L²) comparison; :func:`~minimipt.ops.reference.eviction_times_reference` is the streaming rule run as a
Python loop (the slow twin). Tests check that all three agree, ties included. Because one entry is evicted by each
write into a full cache, the write that evicts s is at ``e_s``; following these links gives every
written token the slot it occupies in the streaming form (:func:`~minimipt.ops.eviction.slot_table`: pointer jumping,
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
``λ · mean_t w_t`` that a training loop can add (:attr:`~minimipt.state.CacheAux.write_rate`, returned
with ``return_aux=True``).

Four batched attention paths compute the same function (tests compare values and gradients):
:func:`~minimipt.ops.reference.cache_attention_dense` (materialised ``(B, H, L, L)`` logits; any K, the reference),
:func:`~minimipt.ops.cache_attention.cache_attention_blocked` (blocks of C queries over the ≤ K slots held before the block plus
the block itself: O(L·(K + C)), finite K), :func:`~minimipt.ops.cache_attention.cache_attention_slots` (gathers the K slots of
every position: O(L·K·d_h), time-chunked with recomputation in the backward pass when long) and
:func:`~minimipt.ops.triton.cache_attention.cache_attention_triton` (``"fused"``: the eviction times, the
slots held before each block and the blocked attention in three Triton kernels, recomputing in the
backward; CUDA only, ``"blocked"`` elsewhere). ``method="auto"`` takes ``"fused"`` on CUDA where it works;
elsewhere dense while ``L ≤ K + C`` (and for unbounded K), blocked beyond.

**Memory in training.** The eviction pass runs once (:func:`~minimipt.ops.cache_attention.evictions`,
no gradient); the projections, the attention over what is held and the read-out form one region
(:meth:`CausalSparseCache._read`) run under ``torch.utils.checkpoint``: for backward it keeps only its
inputs (``x̂``, ``log w``, the eviction times) and runs again in the backward pass. ``log p`` is kept
once, by the layer's logsigmoid and the write score's logsumexp together. At d = 128 under bf16
autocast that is ≈ 1 kB per token and layer instead of ≈ 3 kB (``docs/cache_kernels.md``, memory).

**Continuing from a state.** ``forward(..., state=s)`` reads the slots held in ``s`` as well as the
new tokens, and ``return_state=True`` returns the slots held after the last token, slot for slot as
``step`` would hold them (:mod:`minimipt.cache_continue`: the held slots become a prefix of the
sequence). Both forms carry a :class:`~minimipt.state.CacheState`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .cache_continue import Prefix, final_slots_from, state_as_prefix, state_from_table
from .ops.cache_attention import CACHE_METHODS, attend, evictions, fused_usable
from .ops.reference import eligible_mask, softmax_with_sink, write_scores
from .state import CacheAux, CacheState, CacheStats, outputs

__all__ = ["CausalSparseCache", "CacheStats", "check_cache_slots"]  # CacheStats: see minimipt.state

_NEG_INF = float("-inf")


def check_cache_slots(cache_slots) -> None:
    """``cache_slots`` must be ``None`` (unbounded) or an int ``≥ 0`` (0: no cache)."""
    if cache_slots is not None and (isinstance(cache_slots, bool) or not isinstance(cache_slots, int)
                                    or cache_slots < 0):
        raise ValueError(f"cache_slots must be an int >= 0 (0 disables the cache) or None (unbounded); "
                         f"got {cache_slots!r}")


# ----------------------------------------------------------------------------------------------
# the module
# ----------------------------------------------------------------------------------------------

class CausalSparseCache(nn.Module):
    """A per-layer causal sparse KV cache of ``slots`` entries read by ``heads``-head attention.

    Args:
        d_model: width ``d`` of ``x̂``.
        slots: K ≥ 1, or ``None`` for unbounded.
        heads: H (must divide ``d_model``).
        write_threshold: τ ∈ [0, 1]; tokens with ``w < τ`` are never written.
        method: batched attention path: ``"auto"`` (see :meth:`path`), ``"fused"`` (Triton kernels on
            CUDA, ``"blocked"`` elsewhere), ``"blocked"``, ``"slots"`` or ``"dense"``.
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
        if method not in ("auto", *CACHE_METHODS):
            raise ValueError(f"method must be one of {', '.join(map(repr, ('auto', *CACHE_METHODS)))}; got {method!r}")
        if method in ("slots", "blocked", "fused") and slots is None:
            raise ValueError(f"method={method!r} needs a finite number of slots; use 'dense' or 'auto' for slots=None")
        self.d_model, self.slots, self.heads = d_model, slots, heads
        self.head_dim = d_model // heads
        self.write_threshold, self.method = float(write_threshold), method
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)  # [q | k | v]
        self.out_proj = nn.Linear(d_model, d_model)
        self.gate = nn.Linear(d_model, d_model)
        with torch.no_grad():
            self.gate.bias.fill_(gate_bias)

    def path(self, length: int, device: torch.device | str | None = None) -> str:
        """The batched attention path used for sequences of ``length`` tokens on ``device``.

        ``"auto"``: ``"dense"`` for unbounded K; on a CUDA device where the fused kernels work
        (:func:`~minimipt.ops.cache_attention.fused_usable`, K ≤ 128) ``"fused"`` (three launches, no
        ``(B, L, K)`` tables kept for backward); elsewhere ``"dense"`` while its ``L²`` logits per
        head are no more than the blocked path's ``L·(K + C)`` (``C = max(K, 16)``), i.e.
        ``L ≤ K + C``, and ``"blocked"`` beyond (O(L·(K + C)), batched matrix products). ``"slots"``
        (a gather of K keys per position) is only taken when asked for. All compute the same
        function (tests compare them)."""
        if self.method != "auto":
            return self.method
        K = self.slots
        if K is None:
            return "dense"
        on_cuda = device is not None and torch.device(device).type == "cuda"
        if on_cuda and fused_usable(device, torch.float32, length, K):
            return "fused"
        if length <= K + max(K, 16):
            return "dense"
        return "blocked"

    def _qkv(self, xh: torch.Tensor):
        q, k, v = self.qkv(xh).chunk(3, dim=-1)
        shape = xh.shape[:-1] + (self.heads, self.head_dim)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def _read_out(self, xh: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        attn = attn.reshape(attn.shape[:-2] + (self.d_model,)).to(xh.dtype)
        return torch.sigmoid(self.gate(xh)) * self.out_proj(attn)

    def forward(self, xh: torch.Tensor, log_p: torch.Tensor, lengths: torch.Tensor | None = None,
                state: CacheState | None = None, return_state: bool = False, return_aux: bool = False):
        """Batched form. ``xh``: ``(B, L, d)``; ``log_p``: ``(B, L, D)`` → ``r`` ``(B, L, d)``.

        ``state``: continue after the tokens it holds (:meth:`init_state`, :meth:`step` or an earlier
        ``return_state=True``). ``lengths`` ``(B,)`` (optional): real tokens per sequence (right
        padding), for the statistics. Returns ``r``, then the :class:`~minimipt.state.CacheState`
        after the last token if ``return_state``, then a :class:`~minimipt.state.CacheAux` if
        ``return_aux``.
        """
        B, L, _ = xh.shape
        K = self.slots
        log_w = write_scores(log_p)  # (B, L)
        eligible = eligible_mask(log_w, self.write_threshold)
        if state is not None:
            self.check_state(state, B)
        prefix = None if state is None else state_as_prefix(state)  # the held slots, in position order
        P = 0 if prefix is None else prefix.log_w.shape[1]
        if P:  # [held | new]
            log_w_all = torch.cat([prefix.log_w.to(log_w.dtype), log_w], 1)
            eligible_all = torch.cat([prefix.eligible, eligible], 1)
        else:
            log_w_all, eligible_all = log_w, eligible
        method = self.path(P + L, xh.device)
        evict, held = evictions(log_w_all, eligible_all, K, method)  # (B, P + L): which positions are held when
        args = (xh, log_w_all, evict, held, None if prefix is None else prefix.k,
                None if prefix is None else prefix.v, method)
        if torch.is_grad_enabled():  # keep the inputs only; recompute the rest in the backward pass
            r, k, v = checkpoint(self._read, *args, use_reentrant=False, preserve_rng_state=False)
        else:
            r, k, v = self._read(*args)
        new_state = aux = None
        if return_state:
            new_state = self._state_after(state, prefix, k, v, log_w_all, eligible, evict, L)
        if return_aux:
            aux = self._aux(log_w, eligible, evict, P, lengths)
        return outputs(r, new_state, aux, return_state, return_aux)

    def _read(self, xh, log_w_all, evict, held, held_k, held_v, method: str):
        """``(r, k, v)``: the read-out ``r`` ``(B, L, d)`` of the L new tokens, and the keys and values
        ``(B, P + L, H, d_h)`` of ``[held | new]`` (``held_k``, ``held_v``: the P held slots or None).
        Everything that :meth:`forward` recomputes in the backward pass: the projections, the
        attention and the read-out (their activations are never kept; only the inputs are)."""
        q, k, v = self._qkv(xh)  # (B, L, H, d_h)
        P = 0 if held_k is None else held_k.shape[1]
        if P:  # [held | new]: the prefix's queries are zeros, their outputs dropped
            q = torch.cat([q.new_zeros(q.shape[0], P, *q.shape[2:]), q], 1)
            k, v = torch.cat([held_k.to(k.dtype), k], 1), torch.cat([held_v.to(v.dtype), v], 1)
        attn = attend(q, k, v, log_w_all, evict, held, self.slots, method)[:, P:]  # (B, L, H, d_h)
        return self._read_out(xh, attn), k, v

    def _state_after(self, state, prefix: Prefix | None, k, v, log_w_all, eligible, evict, L) -> CacheState:
        """The slots held after the last of the L new tokens (``k, v, log_w_all``: over ``[held | new]``)."""
        B = k.shape[0]
        t0 = torch.zeros((), dtype=torch.long, device=k.device) if state is None else state.t
        dtype = self.qkv.weight.dtype
        new_pos = t0 + torch.arange(L, device=k.device).expand(B, L)  # (B, L)
        if self.slots is None:  # unbounded: slot j holds position j; one more slot per token
            s = state if state is not None else self.init_state(B, device=k.device, dtype=dtype)
            P = s.log_w.shape[1]
            return CacheState(k=torch.cat([s.k, k[:, P:].to(dtype)], 1), v=torch.cat([s.v, v[:, P:].to(dtype)], 1),
                              log_w=torch.cat([s.log_w, log_w_all[:, P:].to(s.log_w.dtype)], 1),
                              valid=torch.cat([s.valid, eligible], 1), pos=torch.cat([s.pos, new_pos], 1),
                              t=t0 + L, slots=None)
        if prefix is None:
            slot, held = evict.new_zeros(B, 0), eligible.new_zeros(B, 0)
            pos_all = new_pos
        else:
            slot, held = prefix.slot, prefix.eligible
            pos_all = torch.cat([prefix.pos, new_pos], 1)
        row = final_slots_from(evict, self.slots, slot, held)  # (B, K): who holds each slot at the end
        return state_from_table(row, k, v, log_w_all, pos_all, t0 + L, self.slots, dtype)

    @staticmethod
    def _aux(log_w, eligible, evict, P: int, lengths) -> CacheAux:
        """Statistics of the L new tokens (the first ``P`` entries of ``evict`` are the held prefix)."""
        B, L = log_w.shape
        dev = log_w.device
        n = torch.full((B,), L, device=dev, dtype=torch.long) if lengths is None else lengths.long()
        inside = torch.arange(L, device=dev)[None, :] < n[:, None]  # (B, L) counted tokens
        comb = torch.arange(P + L, device=dev)[None, :]  # combined positions
        last = (P + n - 1).clamp(min=0)[:, None]
        with torch.no_grad():
            stats = CacheStats(
                written=((evict[:, P:] > comb[:, P:]) & inside).sum(1),
                held=((evict > comb) & (comb <= last) & (evict > last)).sum(1),
                eligible=(eligible & inside).sum(1),
                length=n,
            )
        return CacheAux(stats=stats, write_rate=(log_w.exp() * inside).sum() / inside.sum().clamp(min=1))

    # ------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype: torch.dtype | None = None) -> CacheState:
        """Empty cache: K slots (0 slots that grow by one per token for ``slots=None``)."""
        ref = self.qkv.weight
        device, dtype = device or ref.device, dtype or ref.dtype
        K = 0 if self.slots is None else self.slots
        B, H, dh = batch_size, self.heads, self.head_dim
        lw_dtype = CacheState.score_dtype(dtype)
        return CacheState(k=torch.zeros(B, K, H, dh, device=device, dtype=dtype),
                          v=torch.zeros(B, K, H, dh, device=device, dtype=dtype),
                          log_w=torch.zeros(B, K, device=device, dtype=lw_dtype),
                          valid=torch.zeros(B, K, device=device, dtype=torch.bool),
                          pos=torch.full((B, K), -1, device=device, dtype=torch.long),
                          t=torch.zeros((), device=device, dtype=torch.long), slots=self.slots)

    def check_state(self, state, batch_size: int) -> None:
        """``ValueError`` unless ``state`` is a :class:`~minimipt.state.CacheState` of this cache's K,
        heads and width, for ``batch_size`` sequences."""
        if not isinstance(state, CacheState):
            raise ValueError(f"a cache state must be a CacheState from cache.init_state(B); got {type(state).__name__}")
        if state.slots != self.slots:
            raise ValueError(f"the state was made for a cache with cache_slots={state.slots}, this cache has "
                             f"cache_slots={self.slots}; make one with init_state(B)")
        want = (self.heads, self.head_dim)
        if tuple(state.k.shape[2:]) != want or state.k.shape[0] != batch_size:
            raise ValueError(f"the cache state holds keys of shape {tuple(state.k.shape)}; this cache needs "
                             f"(B={batch_size}, slots, H={self.heads}, d_h={self.head_dim})")

    def step(self, xh_t: torch.Tensor, log_p_t: torch.Tensor, state: CacheState):
        """Streaming form. ``xh_t``: ``(B, d)``; ``log_p_t``: ``(B, D)`` → ``(r_t (B, d), new state)``.

        Write (or not) by the rule in the module docstring, then attend over valid slots + sink.
        """
        self.check_state(state, xh_t.shape[0])
        q, k, v = self._qkv(xh_t)  # (B, H, d_h)
        lw = write_scores(log_p_t).to(state.log_w.dtype)  # (B,)
        elig = eligible_mask(lw, self.write_threshold)  # (B,)
        tpos = state.t.expand(lw.shape[0])  # (B,)
        K_k, K_v, S_w, S_ok, S_pos = state.k, state.v, state.log_w, state.valid, state.pos
        if self.slots is None:  # unbounded: append (invalid when not eligible)
            K_k = torch.cat([K_k, k[:, None].to(K_k.dtype)], 1)
            K_v = torch.cat([K_v, v[:, None].to(K_v.dtype)], 1)
            S_w, S_ok = torch.cat([S_w, lw[:, None]], 1), torch.cat([S_ok, elig[:, None]], 1)
            S_pos = torch.cat([S_pos, tpos[:, None]], 1)
        else:
            K = self.slots
            n = S_ok.sum(1)  # (B,) occupied slots: always slots 0 … n − 1, filled in order
            has_free, first_free = n < K, n.clamp(max=K - 1)
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
        a = softmax_with_sink(logits).to(K_v.dtype)
        attn = torch.einsum("bhk,bkhd->bhd", a, K_v)  # (B, H, d_h)
        new = CacheState(k=K_k, v=K_v, log_w=S_w, valid=S_ok, pos=S_pos, t=state.t + 1, slots=self.slots)
        return self._read_out(xh_t, attn), new

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, slots={self.slots}, heads={self.heads}, "
                f"write_threshold={self.write_threshold}, method={self.method!r}")
