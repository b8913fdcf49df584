"""Fast batched forms of the cache attention (:func:`minimipt.ops.reference.cache_attention_dense`
defines it): each computes the same ``(B, L, H, d_h)`` output from ``q, k, v``, the write scores
and the eviction times, and the tests compare values and gradients with the dense form.

:func:`evictions` (which positions are held when, no gradient) and :func:`attend` (the attention over
them) are the cache's entry points, :func:`evict_and_attend` the two in one call, by one of
:data:`CACHE_METHODS`. The cache calls them apart so that the attention can be recomputed in the
backward pass without the eviction pass. ``"fused"`` computes both in Triton kernels
(:mod:`minimipt.ops.triton.cache_attention`) and falls back to ``"blocked"`` where they are not
available (no CUDA device, no Triton, a failed first-use self-check) or do not apply (K above
:data:`~minimipt.ops.triton.cache_attention.FUSED_MAX_SLOTS`, float64).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch.utils.checkpoint import checkpoint

from .eviction import eviction_times, slot_table
from .reference import cache_attention_dense, softmax_with_sink

__all__ = ["cache_attention_slots", "cache_attention_blocked", "evictions", "attend", "evict_and_attend",
           "fused_usable", "CACHE_METHODS"]

CACHE_METHODS = ("dense", "slots", "blocked", "fused")
_WARNED: set[str] = set()

_NEG_INF = float("-inf")


def _attend_gathered(q, k, v, log_w, table):
    """Attention of ``q`` ``(B, T, H, d_h)`` over the slots ``table`` ``(B, T, K)`` of ``k, v``."""
    B, T, K = table.shape
    H, dh = k.shape[2], k.shape[3]
    idx = table.clamp(min=0).reshape(B, T * K)
    kk = k.gather(1, idx[:, :, None, None].expand(B, T * K, H, dh)).view(B, T, K, H, dh)
    vv = v.gather(1, idx[:, :, None, None].expand(B, T * K, H, dh)).view(B, T, K, H, dh)
    bias = log_w.gather(1, idx).view(B, T, K).masked_fill(table < 0, _NEG_INF)  # (B, T, K)
    logits = torch.einsum("bthd,btkhd->bthk", q, kk) / math.sqrt(dh) + bias[:, :, None, :]
    a = softmax_with_sink(logits).to(v.dtype)  # (B, T, H, K)
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
    a = softmax_with_sink(logits).to(v.dtype)
    out = torch.einsum("bnhcj,bnjhd->bnchd", a, pick(v))  # (B, n, C, H, d_h)
    return out.reshape(B, n * C, H, dh)[:, :L]


def fused_usable(device: torch.device | str, dtype: torch.dtype, length: int, slots: int | None) -> bool:
    """Whether method ``"fused"`` runs for q, k, v of ``dtype`` and ``length`` with ``slots``: its
    kernels take them, and they work on ``device`` (a CUDA device; checked once per device)."""
    from .triton.cache_attention import fused_available, fused_supports

    return fused_supports(dtype, length, slots) and fused_available(torch.device(device))


def evictions(log_w: torch.Tensor, eligible: torch.Tensor, slots: int | None,
              method: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(e, held)``: which positions the cache holds when, for :func:`attend` (no gradient).

    ``e`` ``(B, L)``: the eviction times (:func:`~minimipt.ops.eviction.eviction_times`). ``held``:
    for ``"fused"`` where its kernels run (:func:`fused_usable`), the positions held just before each
    block ``(B, n, K)``, computed with ``e`` by the eviction kernel (float32 or half scores; float64
    ones are ranked by ``eviction_times``); otherwise None (a warning once per device when ``"fused"``
    cannot run there at all).
    """
    if method not in CACHE_METHODS:
        raise ValueError(f"method must be one of {CACHE_METHODS}; got {method!r}")
    if method == "fused":
        if log_w.numel() and fused_usable(log_w.device, log_w.dtype, log_w.shape[1], slots):
            from .triton.cache_attention import evict_blocks_triton

            return evict_blocks_triton(log_w, eligible, slots)
        if log_w.device.type != "cuda" and str(log_w.device) not in _WARNED:
            _WARNED.add(str(log_w.device))
            warnings.warn(f"minimipt: cache method 'fused' needs a CUDA device and Triton; using 'blocked' on "
                          f"{log_w.device}", RuntimeWarning, stacklevel=3)
    return eviction_times(log_w.detach(), eligible, slots), None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor, evict: torch.Tensor,
           held: torch.Tensor | None, slots: int | None, method: str) -> torch.Tensor:
    """The cache's attention ``(B, L, H, d_h)`` by ``method``, given :func:`evictions`' ``(e, held)``.

    ``"fused"`` runs the Triton attention when ``held`` was computed and its kernels take q, k, v's
    dtype (not float64), else ``"blocked"``: the same function (tests compare them).
    """
    if method == "fused":
        from .triton.cache_attention import FusedCacheAttention, block_size, fused_supports

        if held is not None and fused_supports(q.dtype, q.shape[1], slots):
            return FusedCacheAttention.apply(q, k, v, log_w, evict, held, block_size(held.shape[2]))
        method = "blocked"
    if method not in _FORMS:
        raise ValueError(f"method must be one of {CACHE_METHODS}; got {method!r}")
    return _FORMS[method](q, k, v, log_w, evict, slots)


def evict_and_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor,
                     eligible: torch.Tensor, slots: int | None, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(e, attn)``: eviction times ``(B, L)`` and the cache's attention ``(B, L, H, d_h)`` by ``method``:
    :func:`evictions` then :func:`attend`. ``"dense"``, ``"slots"``, ``"blocked"``:
    :func:`~minimipt.ops.eviction.eviction_times`, then the attention form of that name. ``"fused"``:
    both in Triton kernels when :func:`fused_usable`, else ``"blocked"``.
    """
    evict, held = evictions(log_w, eligible, slots, method)
    return evict, attend(q, k, v, log_w, evict, held, slots, method)


_FORMS = {"dense": cache_attention_dense, "slots": cache_attention_slots, "blocked": cache_attention_blocked}
