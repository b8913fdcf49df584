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

_NEG_INF = float("-inf")


@_jit
def _evict_kernel(LW, EL, EVICT, HELD, L, n_blocks, K, C: tl.constexpr, BK: tl.constexpr):
    """Eviction times and per-block held sets of one sequence (program ``b``).

    Position x, present at t, is held iff fewer than K eligible positions ``y ≤ t`` beat it. The
    positions that can be held inside block ``[c₀, c₀ + C)`` are those held at ``c₀ − 1`` and the
    block's own; for each, the count of beaters at every t of the block is its count among the
    held ones plus a cumulative sum over the block, and ``e_x`` is the first t where it reaches K.
    A position beaten by one that is not held is beaten by all K held ones, so counting among the
    held ones decides the same. Held positions keep their slot; the block's survivors fill the
    free slots in order.
    """
    b = tl.program_id(0).to(tl.int64)
    row = b * L
    slot = tl.arange(0, BK)
    slot_ok = slot < K
    never = L + C  # "not within this block"
    hpos = tl.full([BK], -1, tl.int32)  # positions held before the block, −1 = empty
    hw = tl.full([BK], _NEG_INF, tl.float32)  # their log w
    for i in range(0, n_blocks):
        tl.store(HELD + (b * n_blocks + i) * K + slot, hpos, mask=slot_ok)
        t = i * C + tl.arange(0, C)  # (C,) the block's positions
        inb = t < L
        w = tl.load(LW + row + t, mask=inb, other=_NEG_INF).to(tl.float32)
        el = (tl.load(EL + row + t, mask=inb, other=0) != 0) & inb
        hok = hpos >= 0
        # held x (rows) against held y and block y (columns); block y is later, so ties beat x
        n_h = tl.sum((((hw[None, :] > hw[:, None]) | ((hw[None, :] == hw[:, None]) & (hpos[None, :] > hpos[:, None])))
                      & hok[None, :]).to(tl.int32), axis=1)  # (BK,)
        cnt = tl.cumsum(((w[None, :] >= hw[:, None]) & el[None, :]).to(tl.int32), axis=1) + n_h[:, None]
        e_h = tl.min(tl.where(cnt >= K, t[None, :], never), axis=1)  # (BK,) first t with K beaters
        # block x (rows) against held y (earlier: must be strictly larger) and block y
        n_b = tl.sum(((hw[None, :] > w[:, None]) & hok[None, :]).to(tl.int32), axis=1)  # (C,)
        beat = (w[None, :] > w[:, None]) | ((w[None, :] == w[:, None]) & (t[None, :] > t[:, None]))
        cnt_b = tl.cumsum((beat & el[None, :]).to(tl.int32), axis=1) + n_b[:, None]
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
        hpos = tl.where(keep, hpos, tl.where(got, new_pos, -1))
        hw = tl.where(keep, hw, tl.where(got, new_w, _NEG_INF))
    tl.store(EVICT + row + tl.where(hpos >= 0, hpos, 0), tl.full([BK], 0, tl.int64) + L, mask=hpos >= 0)


@_jit
def _mm(a, b, IEEE: tl.constexpr):
    """``a @ b`` with a float32 accumulator; float32 operands in full precision (no TF32)."""
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
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
def _attn_bwd_kernel(Q, K_, V, LW, EVICT, HELD, O, DO, LSE, DQ, DK, DV, DLW,
                     sq_b, sq_l, sk_b, sk_l, sv_b, sv_l, so_b, so_l, sdo_b, sdo_l,
                     L, H, K, n_blocks, DH, scale,
                     C: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr):
    """Gradients of one (block, sequence, head) from the recomputed probabilities
    ``P = exp(x − lse)``: ``∂x = P ⊙ (∂o·vᵀ − δ)`` with ``δ_t = ∂o_t · o_t``; ``∂q = ∂x k / √d_h``,
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
    o = tl.load(O + b * so_b + tq * so_l + h * DH + d[None, :], mask=bmask, other=0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)  # (C,)
    lse = tl.load(LSE + (b * H + h) * L + t, mask=tin, other=0.0)
    p1 = tl.exp(x1 - lse[:, None])  # (C, BK); 0 where masked (lse is finite: the sink)
    p2 = tl.exp(x2 - lse[:, None])  # (C, C)
    ds1 = p1 * (_mm(do, tl.trans(vh), IEEE) - delta[:, None])
    ds2 = p2 * (_mm(do, tl.trans(vb), IEEE) - delta[:, None])
    dq = (_mm(ds1.to(kh.dtype), kh, IEEE) + _mm(ds2.to(kb.dtype), kb, IEEE)) * scale
    tl.store(DQ + ((b * L + tq) * H + h) * DH + d[None, :], dq.to(DQ.dtype.element_ty), mask=bmask)
    # the held positions' share
    slot = tl.arange(0, BK)
    s_h = tl.load(HELD + (b * n_blocks + i) * K + slot, mask=slot < K, other=-1)
    hok = s_h >= 0
    sh = tl.where(hok, s_h, 0).to(tl.int64)[:, None]
    hmask = hok[:, None] & dok[None, :]
    dkh = _mm(tl.trans(ds1).to(q.dtype), q, IEEE) * scale  # (BK, BD)
    dvh = _mm(tl.trans(p1).to(do.dtype), do, IEEE)
    tl.atomic_add(DK + ((b * L + sh) * H + h) * DH + d[None, :], dkh, mask=hmask)
    tl.atomic_add(DV + ((b * L + sh) * H + h) * DH + d[None, :], dvh, mask=hmask)
    tl.atomic_add(DLW + b * L + tl.where(hok, s_h, 0), tl.sum(ds1, axis=0), mask=hok)
    # the block's own positions' share
    dkb = _mm(tl.trans(ds2).to(q.dtype), q, IEEE) * scale  # (C, BD)
    dvb = _mm(tl.trans(p2).to(do.dtype), do, IEEE)
    tl.atomic_add(DK + ((b * L + tq) * H + h) * DH + d[None, :], dkb, mask=bmask)
    tl.atomic_add(DV + ((b * L + tq) * H + h) * DH + d[None, :], dvb, mask=bmask)
    tl.atomic_add(DLW + b * L + t, tl.sum(ds2, axis=0), mask=tin)
