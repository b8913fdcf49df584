"""Triton kernels of the fused cache path (:mod:`minimipt.ops.triton.cache_attention` launches them).

Glossary: B batch, L length, H heads, d_h head width, K slots, C queries per block, ``n = ⌈L/C⌉``
blocks; ``BK``, ``BD``: K and d_h rounded up to powers of two (at least 16, the smallest ``tl.dot``).

* :func:`_evict_kernel` (one program per sequence) walks the blocks in order, carrying the set of
  (at most K) positions held before the block. It writes every eviction time ``e_s`` and, per
  block, the positions held just before it (``held``: ``(B, n, K)``, −1 = empty slot).
* :func:`_attn_fwd_kernel` (one program per block, sequence and head): attention of the block's C
  queries over those ≤ K held positions and the block itself, masked by ``s ≤ t < e_s``, biased by
  ``log w_s``, with the null sink (logit 0, value 0); writes the output and ``lse`` (the log of the
  softmax's denominator, sink included).
* :func:`_attn_bwd_kernel`: recomputes the block's probabilities from ``lse`` and accumulates
  ``∂q`` (stored) and ``∂k``, ``∂v``, ``∂log w`` (atomic adds into float32 buffers: a held
  position is read by every block it is held across).

"Beats": position y outranks x (y is kept over x) iff ``w_y > w_x``, or ``w_y = w_x`` and ``y > x``
(ties go to the later position), the order of :func:`minimipt.ops.eviction.eviction_times`.
Importable without Triton (the kernels are then plain functions, never launched).
"""

from __future__ import annotations

from ._tl import _jit, tl

_NEG_INF = tl.constexpr(float("-inf")) if tl is not None else float("-inf")  # a kernel reads only constexpr globals


@_jit
def _evict_loads(LW, EL, row, t, L):
    """log w (float32, −inf past L) and eligibility (False past L) at positions ``t``."""
    inb = t < L
    w = tl.load(LW + row + t, mask=inb, other=_NEG_INF).to(tl.float32)
    return w, (tl.load(EL + row + t, mask=inb, other=0) != 0) & inb


@_jit
def _evict_kernel(LW, EL, EVICT, HELD, L, n_blocks, K, C: tl.constexpr, BK: tl.constexpr):
    """Eviction times and per-block held sets of one sequence (program ``b``).

    Position x, present at t, is held iff fewer than K eligible positions ``y ≤ t`` beat it. The
    positions that can be held inside block ``[c₀, c₀ + C)`` are those held at ``c₀ − 1`` and the
    block's own; for each, the count of beaters at every t of the block is its count among the
    held ones plus a cumulative sum over the block, and ``e_x`` is the first t where it reaches K.
    A position beaten by one that is not held is beaten by all K held ones, so counting among the
    held ones decides the same. Every beater of a position still held at the block's end is held
    too (it has fewer beaters), so a held position's count among the held ones is carried from
    block to block (``hn``) instead of recounted. Held positions keep their slot; the block's
    survivors fill the free slots in order.
    """
    b = tl.program_id(0).to(tl.int64)
    row = b * L
    slot = tl.arange(0, BK)
    slot_ok = slot < K
    never = L + C  # "not within this block"
    hpos = tl.full([BK], -1, tl.int32)  # positions held before the block, −1 = empty
    hw = tl.full([BK], _NEG_INF, tl.float32)  # their log w
    hn = tl.zeros([BK], tl.int32)  # how many held positions beat each
    w_next, el_next = _evict_loads(LW, EL, row, tl.arange(0, C), L)
    for i in range(0, n_blocks):
        tl.store(HELD + (b * n_blocks + i) * K + slot, hpos, mask=slot_ok)
        t = i * C + tl.arange(0, C)  # (C,) the block's positions
        inb = t < L
        w, el = w_next, el_next
        w_next, el_next = _evict_loads(LW, EL, row, t + C, L)  # the next block's, in flight meanwhile
        hok = hpos >= 0
        # held x (rows) against block y (columns): y is later, so a tie beats x
        beat_h = ((w[None, :] >= hw[:, None]) & el[None, :]).to(tl.int32)  # (BK, C)
        cnt = tl.cumsum(beat_h, axis=1) + hn[:, None]
        e_h = tl.min(tl.where(cnt >= K, t[None, :], never), axis=1)  # (BK,) first t with K beaters
        # block x (rows) against held y (earlier: must be strictly larger) and block y
        n_b = tl.sum(((hw[None, :] > w[:, None]) & hok[None, :]).to(tl.int32), axis=1)  # (C,)
        beat = (w[None, :] > w[:, None]) | ((w[None, :] == w[:, None]) & (t[None, :] > t[:, None]))
        beat_b = (beat & el[None, :]).to(tl.int32)  # (C, C)
        cnt_b = tl.cumsum(beat_b, axis=1) + n_b[:, None]
        e_b = tl.maximum(tl.min(tl.where(cnt_b >= K, t[None, :], never), axis=1), t)  # (C,) e = t: never written
        stays = el & (e_b >= never)
        tl.store(EVICT + row + t, tl.where(el, e_b, t).to(tl.int64), mask=inb & ~stays)
        tl.store(EVICT + row + tl.where(hok, hpos, 0), e_h.to(tl.int64), mask=hok & (e_h < never))
        # the next held set: kept entries keep their slot, the block's survivors fill the free ones
        keep = hok & (e_h >= never)
        free = slot_ok & ~keep
        free_rank = tl.cumsum(free.to(tl.int32), axis=0) - 1
        stay_rank = tl.cumsum(stays.to(tl.int32), axis=0) - 1
        match = stays[:, None] & free[None, :] & (stay_rank[:, None] == free_rank[None, :])  # (C, BK)
        got = tl.sum(match.to(tl.int32), axis=0) > 0
        new_pos = tl.sum(tl.where(match, t[:, None], 0), axis=0)
        new_w = tl.sum(tl.where(match, w[:, None], 0.0), axis=0)
        new_n = tl.sum(tl.where(match, (n_b + tl.sum(beat_b, axis=1))[:, None], 0), axis=0)
        hn = tl.where(keep, hn + tl.sum(beat_h, axis=1), tl.where(got, new_n, 0))
        hpos = tl.where(keep, hpos, tl.where(got, new_pos, -1))
        hw = tl.where(keep, hw, tl.where(got, new_w, _NEG_INF))
    tl.store(EVICT + row + tl.where(hpos >= 0, hpos, 0), tl.full([BK], 0, tl.int64) + L, mask=hpos >= 0)


@_jit
def _mm(a, b, IEEE: tl.constexpr):
    """``a @ b`` with a float32 accumulator; float32 operands as three TF32 products (float32 accuracy
    on the tensor cores; plain TF32 would lose 3 decimal digits)."""
    if IEEE:
        return tl.dot(a, b, input_precision="tf32x3")
    else:
        return tl.dot(a, b)


@_jit
def _attn_fwd_kernel(Q, K_, V, LW, EVICT, HELD, O, LSE,
                     sq_b, sq_l, sk_b, sk_l, sv_b, sv_l, so_b, so_l,
                     L, H, K, n_blocks, DH, scale,
                     C: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr):
    """One block of C queries, one sequence and one head: ``o`` (C, d_h) and ``lse`` (C,)."""
    i = tl.program_id(0)
    b = (tl.program_id(1) // H).to(tl.int64)
    h = tl.program_id(1) % H
    t = i * C + tl.arange(0, C)
    d = tl.arange(0, BD)
    q, kh, vh, x1, kb, vb, x2 = _logits(Q, K_, V, LW, EVICT, HELD, b, h, i, t, d, L, K, n_blocks, scale,
                                        sq_b, sq_l, sk_b, sk_l, sv_b, sv_l, DH, BK, IEEE)
    m = tl.maximum(tl.maximum(tl.max(x1, axis=1), tl.max(x2, axis=1)), 0.0)  # the sink's logit is 0
    p1 = tl.exp(x1 - m[:, None])
    p2 = tl.exp(x2 - m[:, None])
    den = tl.sum(p1, axis=1) + tl.sum(p2, axis=1) + tl.exp(-m)
    acc = _mm(p1.to(vh.dtype), vh, IEEE) + _mm(p2.to(vb.dtype), vb, IEEE)  # (C, BD)
    out = acc / den[:, None]
    tin = t < L
    tl.store(O + b * so_b + t.to(tl.int64)[:, None] * so_l + h * DH + d[None, :], out.to(O.dtype.element_ty),
             mask=tin[:, None] & (d < DH)[None, :])
    tl.store(LSE + (b * H + h) * L + t, m + tl.log(den), mask=tin)


@_jit
def _logits(Q, K_, V, LW, EVICT, HELD, b, h, i, t, d, L, K, n_blocks, scale,
            sq_b, sq_l, sk_b, sk_l, sv_b, sv_l, DH, BK: tl.constexpr, IEEE: tl.constexpr):
    """Loads of one (block, sequence, head) and its masked logits: ``q`` (C, BD); the held
    positions' ``kh, vh`` (BK, BD) and logits ``x1`` (C, BK); the block's ``kb, vb`` (C, BD) and
    logits ``x2`` (C, C); −inf where a key is not held at the query's time."""
    tin = t < L
    dok = d < DH
    tq = t.to(tl.int64)[:, None]
    q = tl.load(Q + b * sq_b + tq * sq_l + h * DH + d[None, :], mask=tin[:, None] & dok[None, :], other=0.0)
    slot = tl.arange(0, BK)
    s_h = tl.load(HELD + (b * n_blocks + i) * K + slot, mask=slot < K, other=-1)  # (BK,)
    hok = s_h >= 0
    sh = tl.where(hok, s_h, 0).to(tl.int64)
    kmask = hok[:, None] & dok[None, :]
    kh = tl.load(K_ + b * sk_b + sh[:, None] * sk_l + h * DH + d[None, :], mask=kmask, other=0.0)
    vh = tl.load(V + b * sv_b + sh[:, None] * sv_l + h * DH + d[None, :], mask=kmask, other=0.0)
    lwh = tl.load(LW + b * L + sh, mask=hok, other=0.0)
    eh = tl.load(EVICT + b * L + sh, mask=hok, other=0)
    x1 = _mm(q, tl.trans(kh), IEEE) * scale + lwh[None, :]
    x1 = tl.where(hok[None, :] & (t[:, None] < eh[None, :]), x1, _NEG_INF)  # held positions s < c₀ ≤ t
    bmask = tin[:, None] & dok[None, :]
    kb = tl.load(K_ + b * sk_b + tq * sk_l + h * DH + d[None, :], mask=bmask, other=0.0)
    vb = tl.load(V + b * sv_b + tq * sv_l + h * DH + d[None, :], mask=bmask, other=0.0)
    lwb = tl.load(LW + b * L + t, mask=tin, other=0.0)
    eb = tl.load(EVICT + b * L + t, mask=tin, other=0)
    x2 = _mm(q, tl.trans(kb), IEEE) * scale + lwb[None, :]
    x2 = tl.where((t[None, :] <= t[:, None]) & (t[:, None] < eb[None, :]), x2, _NEG_INF)  # e_s ≤ L: no padding
    return q, kh, vh, x1, kb, vb, x2


@_jit
def _attn_bwd_kernel(Q, K_, V, LW, EVICT, HELD, DO, LSE, DQ, DK, DV, DLW,
                     sq_b, sq_l, sk_b, sk_l, sv_b, sv_l, sdo_b, sdo_l,
                     L, H, K, n_blocks, DH, scale,
                     C: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr):
    """Gradients of one (block, sequence, head) from the recomputed probabilities
    ``P = exp(x − lse)``: ``∂x = P ⊙ (∂o·vᵀ − δ)`` with ``δ_t = ∂o_t · o_t`` (``o = P v`` recomputed
    too, so the forward keeps only ``lse``); ``∂q = ∂x k / √d_h``,
    ``∂k = ∂xᵀ q / √d_h``, ``∂v = Pᵀ ∂o``, ``∂log w_s = Σ_t ∂x_{t,s}``. ``∂q`` is stored (``DQ``
    contiguous ``(B, L, H, d_h)``); ``∂k``, ``∂v`` (float32, contiguous) and ``∂log w`` ``(B, L)``
    are accumulated with atomic adds."""
    i = tl.program_id(0)
    b = (tl.program_id(1) // H).to(tl.int64)
    h = tl.program_id(1) % H
    t = i * C + tl.arange(0, C)
    d = tl.arange(0, BD)
    tin = t < L
    dok = d < DH
    tq = t.to(tl.int64)[:, None]
    q, kh, vh, x1, kb, vb, x2 = _logits(Q, K_, V, LW, EVICT, HELD, b, h, i, t, d, L, K, n_blocks, scale,
                                        sq_b, sq_l, sk_b, sk_l, sv_b, sv_l, DH, BK, IEEE)
    bmask = tin[:, None] & dok[None, :]
    do = tl.load(DO + b * sdo_b + tq * sdo_l + h * DH + d[None, :], mask=bmask, other=0.0)
    lse = tl.load(LSE + (b * H + h) * L + t, mask=tin, other=0.0)
    p1 = tl.exp(x1 - lse[:, None])  # (C, BK); 0 where masked (lse is finite: the sink)
    p2 = tl.exp(x2 - lse[:, None])  # (C, C)
    o = _mm(p1.to(vh.dtype), vh, IEEE) + _mm(p2.to(vb.dtype), vb, IEEE)  # the output again, not kept from the forward
    delta = tl.sum(do.to(tl.float32) * o, axis=1)  # (C,)
    # the held positions' share
    ds1 = p1 * (_mm(do, tl.trans(vh), IEEE) - delta[:, None])  # (C, BK)
    dq = _mm(ds1.to(kh.dtype), kh, IEEE)
    slot = tl.arange(0, BK)
    s_h = tl.load(HELD + (b * n_blocks + i) * K + slot, mask=slot < K, other=-1)
    hok = s_h >= 0
    sh = tl.where(hok, s_h, 0).to(tl.int64)
    hmask = hok[:, None] & dok[None, :]
    dkh = _mm(tl.trans(ds1).to(q.dtype), q, IEEE) * scale  # (BK, BD)
    tl.atomic_add(DK + ((b * L + sh[:, None]) * H + h) * DH + d[None, :], dkh, mask=hmask, sem="relaxed")
    dvh = _mm(tl.trans(p1).to(do.dtype), do, IEEE)
    tl.atomic_add(DV + ((b * L + sh[:, None]) * H + h) * DH + d[None, :], dvh, mask=hmask, sem="relaxed")
    tl.atomic_add(DLW + b * L + sh, tl.sum(ds1, axis=0), mask=hok, sem="relaxed")
    # the block's own positions' share
    ds2 = p2 * (_mm(do, tl.trans(vb), IEEE) - delta[:, None])  # (C, C)
    dq = (dq + _mm(ds2.to(kb.dtype), kb, IEEE)) * scale
    tl.store(DQ + ((b * L + tq) * H + h) * DH + d[None, :], dq.to(DQ.dtype.element_ty), mask=bmask)
    dkb = _mm(tl.trans(ds2).to(q.dtype), q, IEEE) * scale  # (C, BD)
    tl.atomic_add(DK + ((b * L + tq) * H + h) * DH + d[None, :], dkb, mask=bmask, sem="relaxed")
    dvb = _mm(tl.trans(p2).to(do.dtype), do, IEEE)
    tl.atomic_add(DV + ((b * L + tq) * H + h) * DH + d[None, :], dvb, mask=bmask, sem="relaxed")
    tl.atomic_add(DLW + b * L + t, tl.sum(ds2, axis=0), mask=tin, sem="relaxed")
