"""Triton device functions shared by the scan kernels (:mod:`minimipt.ops.triton.scan`).

Complex numbers travel as ``(re, im)`` float32 pairs of ``(BLOCK_L, BLOCK_D)`` tiles; an affine map
``x ↦ a x + b`` is the four fields ``(Re a, Im a, Re b, Im b)``. Importable without Triton (the
functions are then plain Python and never launched).
"""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # keep the module importable without Triton (docs, package walks); scan_triton raises
    triton = tl = libdevice = None


def _jit(fn):
    """``triton.jit`` when Triton is installed, else the plain function (never launched)."""
    return triton.jit(fn) if triton is not None else fn


@_jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@_jit
def _compose(al_r, al_i, bl_r, bl_i, ar_r, ar_i, br_r, br_i):
    """Compose the affine maps ``x ↦ a_l x + b_l`` (applied first) and ``x ↦ a_r x + b_r``."""
    a_r, a_i = _cmul(ar_r, ar_i, al_r, al_i)
    b_r, b_i = _cmul(ar_r, ar_i, bl_r, bl_i)
    return a_r, a_i, b_r + br_r, b_i + br_i


@_jit
def _cos_sin(th, FAST_TRIG: tl.constexpr):
    """``(cos θ, sin θ)``: libdevice's accurate versions, or the hardware approximations after
    reducing θ to [-π, π] (absolute error about 1e-6)."""
    if FAST_TRIG:
        r = th - 6.283185307179586 * tl.floor(th * 0.15915494309189535 + 0.5)
        return libdevice.fast_cosf(r), libdevice.fast_sinf(r)
    else:
        return tl.cos(th), tl.sin(th)


@_jit
def _pair_offsets(t, base, L, D, pid_d, BLOCK_D: tl.constexpr):
    """Offsets and mask of a ``(BLOCK_L, 2·BLOCK_D)`` tile of interleaved (re, im) float pairs:
    each row is one contiguous run, so the loads and stores coalesce and vectorise."""
    c2 = pid_d * (2 * BLOCK_D) + tl.arange(0, 2 * BLOCK_D)
    offs = (base + t.to(tl.int64) * D)[:, None] * 2 + c2[None, :]
    mask = ((t >= 0) & (t < L))[:, None] & (c2 < 2 * D)[None, :]
    return offs, mask


@_jit
def _load_pairs(ptr, offs, mask, STRIDED: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """``(re, im)`` float32 ``(BLOCK_L, BLOCK_D)`` tiles of a pair tensor (zero where masked)."""
    if STRIDED:  # two stride-2 loads of the same lines (the second mostly hits L1)
        offs1 = tl.reshape(offs, (BLOCK_L, BLOCK_D, 2))
        o_r, o_i = tl.split(offs1)
        m_r, m_i = tl.split(tl.reshape(mask, (BLOCK_L, BLOCK_D, 2)))
        return (tl.load(ptr + o_r, mask=m_r, other=0.0).to(tl.float32),
                tl.load(ptr + o_i, mask=m_i, other=0.0).to(tl.float32))
    else:
        x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)  # (BLOCK_L, 2·BLOCK_D)
        return tl.split(tl.reshape(x, (BLOCK_L, BLOCK_D, 2)))


@_jit
def _store_pairs(ptr, offs, mask, re, im, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    tl.store(ptr + offs, tl.reshape(tl.join(re, im), (BLOCK_L, 2 * BLOCK_D)), mask=mask)


@_jit
def _fwd_loads(P, TH, U, t, base, cols, cmask, L, D, pid_d,
               STRIDED: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """p, θ, Re u, Im u of the tile at rows ``t`` as float32; padded rows give p = θ = u = 0,
    the identity map, so a carry passes through them unchanged."""
    mask = (t < L)[:, None] & cmask[None, :]
    off = base + t.to(tl.int64)[:, None] * D + cols[None, :]
    p = tl.load(P + off, mask=mask, other=0.0).to(tl.float32)
    th = tl.load(TH + off, mask=mask, other=0.0).to(tl.float32)
    offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
    u_r, u_i = _load_pairs(U, offs2, mask2, STRIDED, BLOCK_L, BLOCK_D)
    return p, th, u_r, u_i


@_jit
def _store_grads(DP, DTH, DU, cs, sn, hp_r, hp_i, g_r, g_i, u_r, u_i, p, t, base, cols, cmask, L, D, pid_d,
                 BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """Both backwards' last step, for a (BLOCK_L, BLOCK_D) tile with g = ∂L/∂h_t (conjugate
    convention) and h_{t−1}: with r = e^{iθ_t} h_{t−1},
    ∂L/∂p_t = Re(conj(g)(u_t − r)), ∂L/∂θ_t = (1 − p_t) Im(conj(g)·i r) = (p_t − 1)(Im r Re g − Re r Im g),
    ∂L/∂u_t = p_t g."""
    r_r = cs * hp_r - sn * hp_i
    r_i = cs * hp_i + sn * hp_r
    dp = g_r * (u_r - r_r) + g_i * (u_i - r_i)
    dth = (p - 1.0) * (r_i * g_r - r_r * g_i)
    mask = (t < L)[:, None] & cmask[None, :]
    off = base + t.to(tl.int64)[:, None] * D + cols[None, :]
    tl.store(DP + off, dp, mask=mask)
    tl.store(DTH + off, dth, mask=mask)
    offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
    _store_pairs(DU, offs2, mask2, p * g_r, p * g_i, BLOCK_L, BLOCK_D)


@_jit
def _compose_excl(al_r, al_i, bl_r, bl_i, el_r, el_i, fl_r, fl_i,
                  ar_r, ar_i, br_r, br_i, er_r, er_i, fr_r, fr_i):
    """Compose two segments of affine maps, the left one applied first. Each segment carries
    ``(A, B)``, its whole map ``x ↦ A x + B``, and ``(E, F)``, the map of the segment without
    its last-applied element (the identity for one element). The whole of ``l`` then ``r`` is
    ``r ∘ l``; without its last-applied element (``r``'s) it is ``r.excl ∘ l``."""
    a_r, a_i, b_r, b_i = _compose(al_r, al_i, bl_r, bl_i, ar_r, ar_i, br_r, br_i)
    e_r, e_i, f_r, f_i = _compose(al_r, al_i, bl_r, bl_i, er_r, er_i, fr_r, fr_i)
    return a_r, a_i, b_r, b_i, e_r, e_i, f_r, f_i


@_jit
def _shifted_scan(x_r, x_i, y_r, y_i, c_r, c_i, REVERSE: tl.constexpr, SHIFT: tl.constexpr,
                  BLOCK_L: tl.constexpr):
    """Scan the maps ``z ↦ x z + y`` along the tile's rows from the carry ``c`` and return, at
    each row, the state *before* that row's map and the state after the whole tile:

    forward (``REVERSE`` False, ``c`` entering row 0): ``z_{r−1}`` at row r, and ``z_{BL−1}``;
    reverse (``c`` entering row BL − 1 from above): ``z_{r+1}`` at row r, and ``z_0``.

    ``SHIFT`` 0: one scan that also carries each prefix without its last element (twice the
    complex products, no data movement); 1: the plain scan, then ``tl.gather`` by one row."""
    rows = tl.arange(0, BLOCK_L)
    ones = tl.full(x_r.shape, 1.0, tl.float32)
    zeros = tl.zeros(x_r.shape, tl.float32)
    edge = BLOCK_L - 1 if REVERSE else 0
    if SHIFT == 0:
        A_r, A_i, S_r, S_i, E_r, E_i, F_r, F_i = tl.associative_scan(
            (x_r, x_i, y_r, y_i, ones, zeros, zeros, zeros), 0, _compose_excl, reverse=REVERSE)
        p_r = F_r + E_r * c_r[None, :] - E_i * c_i[None, :]
        p_i = F_i + E_r * c_i[None, :] + E_i * c_r[None, :]
    else:
        A_r, A_i, S_r, S_i = tl.associative_scan((x_r, x_i, y_r, y_i), 0, _compose, reverse=REVERSE)
        z_r = S_r + A_r * c_r[None, :] - A_i * c_i[None, :]
        z_i = S_i + A_r * c_i[None, :] + A_i * c_r[None, :]
        src = (rows + 1) if REVERSE else (rows - 1)
        src = tl.minimum(tl.maximum(src, 0), BLOCK_L - 1)
        idx = src[:, None] + tl.zeros(x_r.shape, tl.int32)
        at_edge = (rows == edge)[:, None]
        p_r = tl.where(at_edge, c_r[None, :], tl.gather(z_r, idx, 0))
        p_i = tl.where(at_edge, c_i[None, :], tl.gather(z_i, idx, 0))
    # the state after the whole tile: the full prefix at the far row
    far = (rows == (0 if REVERSE else BLOCK_L - 1))[:, None]
    o_r = tl.sum(tl.where(far, S_r, 0.0), axis=0)
    o_i = tl.sum(tl.where(far, S_i, 0.0), axis=0)
    fa_r = tl.sum(tl.where(far, A_r, 0.0), axis=0)
    fa_i = tl.sum(tl.where(far, A_i, 0.0), axis=0)
    return p_r, p_i, o_r + fa_r * c_r - fa_i * c_i, o_i + fa_r * c_i + fa_i * c_r


# ---------------------------------------------------------------------------------------------
# the checkpoints: the state entering every CKPT_EVERY rows, (B, n_ckpt, D) float32 (re, im) pairs
# ---------------------------------------------------------------------------------------------

@_jit
def _initial_state(H0, CKPT, pid_b, cols, cmask, D, n_ckpt,
                   HAS_H0: tl.constexpr, CKPT_EVERY: tl.constexpr, BLOCK_D: tl.constexpr):
    """The carry before the first tile, ``(c_r, c_i)`` ``(BLOCK_D,)``: ``H0``'s channels (B, D) pairs,
    or zeros; also written as checkpoint 0 when the forward checkpoints."""
    two = tl.arange(0, 2)                             # (re, im)
    if HAS_H0:
        c = tl.load(H0 + ((pid_b.to(tl.int64) * D + cols)[:, None] * 2 + two[None, :]),
                    mask=cmask[:, None], other=0.0).to(tl.float32)
        c_r, c_i = tl.split(c)
    else:
        c_r = tl.zeros([BLOCK_D], dtype=tl.float32)
        c_i = tl.zeros([BLOCK_D], dtype=tl.float32)
    if CKPT_EVERY > 0:
        tl.store(CKPT + ((pid_b.to(tl.int64) * n_ckpt * D + cols)[:, None] * 2 + two[None, :]),
                 tl.join(c_r, c_i), mask=cmask[:, None])
    return c_r, c_i


@_jit
def _store_ckpt_rows(CKPT, h_r, h_i, t, pid_b, pid_d, L, D, n_ckpt,
                     CKPT_EVERY: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """The checkpoints that fall inside a tile: ``CKPT[b, k] = h_t`` at the rows ``t`` (``(ROWS,)``)
    with ``t + 1 = k·CKPT_EVERY``; ``h`` is the tile's ``(ROWS, BLOCK_D)`` state."""
    k = (t + 1) // CKPT_EVERY
    sel = ((t + 1) % CKPT_EVERY == 0) & (k < n_ckpt) & (t < L)
    c2 = pid_d * (2 * BLOCK_D) + tl.arange(0, 2 * BLOCK_D)
    offs_c = ((pid_b.to(tl.int64) * n_ckpt + k) * D)[:, None] * 2 + c2[None, :]
    _store_pairs(CKPT, offs_c, sel[:, None] & (c2 < 2 * D)[None, :], h_r, h_i, ROWS, BLOCK_D)


@_jit
def _store_ckpt_carry(CKPT, c_r, c_i, rows_done, pid_b, cols, cmask, D, n_ckpt,
                      CKPT_EVERY: tl.constexpr, BLOCK_D: tl.constexpr):
    """The checkpoint at a tile boundary: ``CKPT[b, k]`` = the carry after ``rows_done`` rows when
    ``rows_done = k·CKPT_EVERY`` (nothing otherwise)."""
    te = rows_done + tl.zeros([BLOCK_D], dtype=tl.int32)  # rows done, as a tensor
    k = te // CKPT_EVERY
    sel = (te % CKPT_EVERY == 0) & (k < n_ckpt) & cmask
    two = tl.arange(0, 2)
    tl.store(CKPT + (((pid_b.to(tl.int64) * n_ckpt + k) * D + cols)[:, None] * 2 + two[None, :]),
             tl.join(c_r, c_i), mask=sel[:, None])


@_jit
def _load_ckpt(CKPT, j, pid_b, n_tiles, D, cols, cmask, BLOCK_D: tl.constexpr):
    """The backward's state entering tile ``j`` (checkpoint ``j``, one per tile), ``(c_r, c_i)``
    ``(BLOCK_D,)``; zeros for ``j < 0`` (a prefetch past the first tile)."""
    two = tl.arange(0, 2)
    jv = j + tl.zeros([BLOCK_D], dtype=tl.int32)  # (BLOCK_D,): a tensor, so its compare is a tensor mask
    c = tl.load(CKPT + (((pid_b.to(tl.int64) * n_tiles + tl.maximum(jv, 0)) * D + cols)[:, None] * 2
                        + two[None, :]), mask=(cmask & (jv >= 0))[:, None], other=0.0)
    return tl.split(c)


# ---------------------------------------------------------------------------------------------
# rows per thread (the v4 backward, the v5 forward)
# ---------------------------------------------------------------------------------------------

@_jit
def _thread_maps(ps, ths, urs, uis, FAST_TRIG: tl.constexpr, LANES: tl.constexpr, R: tl.constexpr,
                 BLOCK_D: tl.constexpr):
    """For a thread's ``R`` consecutive rows (tuples of ``(LANES, BLOCK_D)`` slabs): per row
    ``cos θ``, ``sin θ`` and the gate ``a = (1 − p) e^{iθ}`` (tuples), and the composition
    ``x ↦ A x + B`` of the rows' maps ``x ↦ a_t x + p_t u_t``, first row applied first."""
    css = ()
    sns = ()
    ars = ()
    ais = ()
    one = tl.full([LANES, BLOCK_D], 1.0, tl.float32)
    A_r = one
    A_i = one * 0.0
    B_r = one * 0.0
    B_i = one * 0.0
    for s in tl.static_range(R):
        m = 1.0 - ps[s]
        cs, sn = _cos_sin(ths[s], FAST_TRIG)
        a_r = m * cs
        a_i = m * sn
        css = css + (cs,)
        sns = sns + (sn,)
        ars = ars + (a_r,)
        ais = ais + (a_i,)
        A_r, A_i, B_r, B_i = _compose(A_r, A_i, B_r, B_i, a_r, a_i, ps[s] * urs[s], ps[s] * uis[s])
    return css, sns, ars, ais, A_r, A_i, B_r, B_i


@_jit
def _tile_step(CKPT, m, cs, sn, p, u_r, u_i, c_r, c_i, t, k, pid_b, pid_d, cols, cmask, L, D, n_ckpt,
               CKPT_EVERY: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """One ``(BLOCK_L, BLOCK_D)`` tile of the tree-scan forwards (``_fwd_kernel``, the mixer's):
    ``h_t = m_t e^{iθ_t} h_{t−1} + p_t u_t`` from the carry ``c`` (``tl.associative_scan`` of the
    maps), the checkpoints of tile ``k`` (inside it, or the carry after it), and the next carry
    (h at the tile's last row). Returns ``h_r, h_i`` (BLOCK_L, BLOCK_D) and ``c_r, c_i`` (BLOCK_D,)."""
    A_r, A_i, S_r, S_i = tl.associative_scan((m * cs, m * sn, p * u_r, p * u_i), 0, _compose)
    h_r = S_r + A_r * c_r[None, :] - A_i * c_i[None, :]
    h_i = S_i + A_r * c_i[None, :] + A_i * c_r[None, :]
    if CKPT_EVERY > 0 and CKPT_EVERY % BLOCK_L != 0:  # checkpoints inside the tile
        _store_ckpt_rows(CKPT, h_r, h_i, t, pid_b, pid_d, L, D, n_ckpt, CKPT_EVERY, BLOCK_L, BLOCK_D)
    last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[:, None]
    c_r = tl.sum(tl.where(last, h_r, 0.0), axis=0)
    c_i = tl.sum(tl.where(last, h_i, 0.0), axis=0)
    if CKPT_EVERY > 0 and CKPT_EVERY % BLOCK_L == 0:  # the carry itself, after every few tiles
        _store_ckpt_carry(CKPT, c_r, c_i, (k + 1) * BLOCK_L, pid_b, cols, cmask, D, n_ckpt, CKPT_EVERY, BLOCK_D)
    return h_r, h_i, c_r, c_i
