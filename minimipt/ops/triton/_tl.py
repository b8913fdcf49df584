"""Triton device functions shared by the scan kernels (:mod:`._tl_scan`) and the mixer's (:mod:`._tl_mixer`).

Complex numbers travel as ``(re, im)`` float32 pairs of tiles; an affine map ``x ↦ a x + b`` is the
four fields ``(Re a, Im a, Re b, Im b)``. The checkpoints are the state entering every ``CKPT_EVERY``
rows, ``CKPT[b, j] = h_{j·CKPT_EVERY − 1}`` (``h0`` or 0 at ``j = 0``), stored as ``(B, n_ckpt, D, 2)``
float32 pairs. Importable without Triton (the functions are then plain Python, never launched).
"""

from __future__ import annotations

import os

try:
    import triton
    import triton.language as tl
except ImportError:  # keep the module importable without Triton (docs, package walks); the launchers raise
    triton = tl = None


def _jit(fn):
    """``triton.jit`` when Triton is installed, else the plain function (never launched)."""
    return triton.jit(fn) if triton is not None else fn


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


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
def _exclusive_scan(x_r, x_i, y_r, y_i, c_r, c_i, REVERSE: tl.constexpr, N: tl.constexpr):
    """Scan the maps ``z ↦ x z + y`` along the ``N`` rows of ``(N, BLOCK_D)`` tiles from the carry
    ``c`` (``(BLOCK_D,)``) and return, at each row, the state *before* that row's map, and the state
    after all N:

    forward (``REVERSE`` False, ``c`` entering row 0): ``z_{r−1}`` at row r, and ``z_{N−1}``;
    reverse (``c`` entering row N − 1 from above): ``z_{r+1}`` at row r, and ``z_0``.

    One ``tl.associative_scan`` whose elements also carry each prefix without its last map
    (:func:`_compose_excl`): twice the complex products, no data moved between rows."""
    rows = tl.arange(0, N)
    ones = tl.full(x_r.shape, 1.0, tl.float32)
    zeros = tl.zeros(x_r.shape, tl.float32)
    A_r, A_i, S_r, S_i, E_r, E_i, F_r, F_i = tl.associative_scan(
        (x_r, x_i, y_r, y_i, ones, zeros, zeros, zeros), 0, _compose_excl, reverse=REVERSE)
    p_r = F_r + E_r * c_r[None, :] - E_i * c_i[None, :]
    p_i = F_i + E_r * c_i[None, :] + E_i * c_r[None, :]
    # the state after all N rows: the full prefix at the far row
    far = (rows == (0 if REVERSE else N - 1))[:, None]
    o_r = tl.sum(tl.where(far, S_r, 0.0), axis=0)
    o_i = tl.sum(tl.where(far, S_i, 0.0), axis=0)
    fa_r = tl.sum(tl.where(far, A_r, 0.0), axis=0)
    fa_i = tl.sum(tl.where(far, A_i, 0.0), axis=0)
    return p_r, p_i, o_r + fa_r * c_r - fa_i * c_i, o_i + fa_r * c_i + fa_i * c_r


@_jit
def _thread_maps(ps, ths, urs, uis, LANES: tl.constexpr, R: tl.constexpr, BLOCK_D: tl.constexpr):
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
        cs = tl.cos(ths[s])
        sn = tl.sin(ths[s])
        a_r = m * cs
        a_i = m * sn
        css = css + (cs,)
        sns = sns + (sn,)
        ars = ars + (a_r,)
        ais = ais + (a_i,)
        A_r, A_i, B_r, B_i = _compose(A_r, A_i, B_r, B_i, a_r, a_i, ps[s] * urs[s], ps[s] * uis[s])
    return css, sns, ars, ais, A_r, A_i, B_r, B_i


# ---------------------------------------------------------------------------------------------
# (re, im) pair tensors: one row of a (ROWS, BLOCK_D) tile is one contiguous run of 2·BLOCK_D floats
# ---------------------------------------------------------------------------------------------

@_jit
def _pair_offsets(t, base, L, D, pid_d, BLOCK_D: tl.constexpr):
    """Offsets and mask of a ``(ROWS, 2·BLOCK_D)`` tile of interleaved (re, im) float pairs at rows
    ``t`` (``(ROWS,)``): each row is one contiguous run, so the loads and stores coalesce and vectorise."""
    c2 = pid_d * (2 * BLOCK_D) + tl.arange(0, 2 * BLOCK_D)
    offs = (base + t.to(tl.int64) * D)[:, None] * 2 + c2[None, :]
    mask = ((t >= 0) & (t < L))[:, None] & (c2 < 2 * D)[None, :]
    return offs, mask


@_jit
def _load_pairs(ptr, offs, mask, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """``(re, im)`` float32 ``(ROWS, BLOCK_D)`` tiles of a pair tensor (zero where masked)."""
    x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)  # (ROWS, 2·BLOCK_D)
    return tl.split(tl.reshape(x, (ROWS, BLOCK_D, 2)))


@_jit
def _store_pairs(ptr, offs, mask, re, im, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    tl.store(ptr + offs, tl.reshape(tl.join(re, im), (ROWS, 2 * BLOCK_D)), mask=mask)


# ---------------------------------------------------------------------------------------------
# checkpoints
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
