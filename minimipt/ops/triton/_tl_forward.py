"""The forward kernels of the Triton scan (:mod:`minimipt.ops.triton.scan`): ``h`` and the
checkpoints the recomputing backward reads. ``_fwd_kernel``: ``tl.associative_scan`` along the
tile; ``_fwd_rows_kernel`` (v5): each thread owns consecutive rows (notes/kernel.md).
"""

from __future__ import annotations

from ._tl import (_cmul, _cos_sin, _fwd_loads, _initial_state, _jit, _pair_offsets, _shifted_scan,
                  _store_ckpt_carry, _store_ckpt_rows, _store_pairs, _thread_maps, _tile_step, tl)


@_jit
def _fwd_kernel(P, TH, U, H0, H, CKPT, L, D, n_tiles, n_ckpt,
                HAS_H0: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
                FAST_TRIG: tl.constexpr, STRIDED: tl.constexpr, PREFETCH: tl.constexpr,
                CKPT_EVERY: tl.constexpr):
    """h (B, L, D) pairs; if ``CKPT_EVERY`` > 0 also the state entering every chunk of
    ``CKPT_EVERY`` rows, ``CKPT[b, j] = h_{j·CKPT_EVERY − 1}`` (``h0`` or 0 at j = 0): (B, n_ckpt, D) pairs."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = tl.arange(0, BLOCK_L)                      # (BLOCK_L,)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)    # (BLOCK_D,)
    cmask = cols < D
    base = pid_b.to(tl.int64) * L * D
    c_r, c_i = _initial_state(H0, CKPT, pid_b, cols, cmask, D, n_ckpt, HAS_H0, CKPT_EVERY, BLOCK_D)  # (BLOCK_D,)
    if PREFETCH:  # the next tile's loads are issued before this tile's scan
        p_n, th_n, ur_n, ui_n = _fwd_loads(P, TH, U, rows, base, cols, cmask, L, D, pid_d,
                                           STRIDED, BLOCK_L, BLOCK_D)
    for k in tl.range(0, n_tiles):
        t = k * BLOCK_L + rows
        if PREFETCH:
            p, th, u_r, u_i = p_n, th_n, ur_n, ui_n
            p_n, th_n, ur_n, ui_n = _fwd_loads(P, TH, U, t + BLOCK_L, base, cols, cmask, L, D, pid_d,
                                               STRIDED, BLOCK_L, BLOCK_D)
        else:
            p, th, u_r, u_i = _fwd_loads(P, TH, U, t, base, cols, cmask, L, D, pid_d,
                                         STRIDED, BLOCK_L, BLOCK_D)
        cs, sn = _cos_sin(th, FAST_TRIG)
        h_r, h_i, c_r, c_i = _tile_step(CKPT, 1.0 - p, cs, sn, p, u_r, u_i, c_r, c_i, t, k, pid_b, pid_d, cols, cmask,
                                        L, D, n_ckpt, CKPT_EVERY, BLOCK_L, BLOCK_D)
        offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
        _store_pairs(H, offs2, mask2, h_r, h_i, BLOCK_L, BLOCK_D)


@_jit
def _fwd_slab_loads(P, TH, U, j, base, cols, cmask, L, D, pid_d,
                    STRIDED: tl.constexpr, LANES: tl.constexpr, R: tl.constexpr, BLOCK_D: tl.constexpr):
    """The rows-per-thread forward's loads for tile ``j`` as ``R`` slabs of ``(LANES, BLOCK_D)``
    (slab ``s`` holds rows ``j·LANES·R + i·R + s``, ``i < LANES``, as in :func:`_slab_loads`):
    tuples of p, θ, Re u, Im u, one entry per slab. Rows past ``L`` give p = θ = u = 0, the
    identity map ``x ↦ 1·x + 0``, so the carry passes through them unchanged."""
    lane_rows = tl.arange(0, LANES) * R
    ps = ()
    ths = ()
    urs = ()
    uis = ()
    for s in tl.static_range(R):
        t = j * (LANES * R) + lane_rows + s
        p, th, u_r, u_i = _fwd_loads(P, TH, U, t, base, cols, cmask, L, D, pid_d, STRIDED, LANES, BLOCK_D)
        ps = ps + (p,)
        ths = ths + (th,)
        urs = urs + (u_r,)
        uis = uis + (u_i,)
    return ps, ths, urs, uis


@_jit
def _fwd_rows_kernel(P, TH, U, H0, H, CKPT, L, D, n_tiles, n_ckpt,
                     HAS_H0: tl.constexpr, LANES: tl.constexpr, R: tl.constexpr, BLOCK_D: tl.constexpr,
                     FAST_TRIG: tl.constexpr, STRIDED: tl.constexpr, PREFETCH: tl.constexpr,
                     CKPT_EVERY: tl.constexpr):
    """The forward with rows per thread (v5): what :func:`_fwd_kernel` computes (h, and the
    checkpoints ``CKPT[b, j] = h_{j·CKPT_EVERY − 1}`` if ``CKPT_EVERY`` > 0), but each thread owns
    ``R`` consecutive rows of the tile (``BLOCK_L = LANES·R``), as in :func:`_bwd_rows_kernel`:

    1. per thread, the composition ``x ↦ A x + B`` of its R maps ``x ↦ a_t x + p_t u_t``
       (sequential complex FMAs in registers, no shuffles);
    2. an exclusive scan of those compositions across the ``LANES`` threads of a column (the
       doubled-field scan of ``shift=0``) from the carry gives ``h_{t−1}`` at each thread's first row;
    3. per thread, the recurrence ``h_t = a_t h_{t−1} + p_t u_t`` over its R rows gives h, stored
       slab by slab; the next tile's carry is the h of the last row.

    The carry and every checkpoint are the stored h of that row, bit for bit; against
    :func:`_fwd_kernel` (a tree-ordered scan) they agree to float32 rounding. sin and cos once per
    element; no division; the loads and stores are the same rows and sectors as ``_fwd_kernel``'s."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)    # (BLOCK_D,)
    cmask = cols < D
    base = pid_b.to(tl.int64) * L * D
    lane_rows = tl.arange(0, LANES) * R               # (LANES,) each thread's first row in the tile
    c_r, c_i = _initial_state(H0, CKPT, pid_b, cols, cmask, D, n_ckpt, HAS_H0, CKPT_EVERY, BLOCK_D)  # (BLOCK_D,)
    last_lane = (tl.arange(0, LANES) == LANES - 1)[:, None]
    if PREFETCH:  # the next tile's loads are issued before this tile's arithmetic
        nx = _fwd_slab_loads(P, TH, U, 0, base, cols, cmask, L, D, pid_d, STRIDED, LANES, R, BLOCK_D)
    for j in tl.range(0, n_tiles):
        if PREFETCH:
            ps, ths, urs, uis = nx
            nx = _fwd_slab_loads(P, TH, U, j + 1, base, cols, cmask, L, D, pid_d, STRIDED, LANES, R, BLOCK_D)
        else:
            ps, ths, urs, uis = _fwd_slab_loads(P, TH, U, j, base, cols, cmask, L, D, pid_d,
                                                STRIDED, LANES, R, BLOCK_D)
        # 1. gates, and each thread's composition of its R maps (rows upward)  # (LANES, BLOCK_D) each
        _, _, ars, ais, A_r, A_i, B_r, B_i = _thread_maps(ps, ths, urs, uis, FAST_TRIG, LANES, R, BLOCK_D)
        # 2. the state entering each thread's first row
        h_r, h_i, _, _ = _shifted_scan(A_r, A_i, B_r, B_i, c_r, c_i, False, 0, LANES)
        # 3. the recurrence over the thread's rows; store h slab by slab
        for s in tl.static_range(R):
            h_r, h_i = _cmul(ars[s], ais[s], h_r, h_i)
            h_r = h_r + ps[s] * urs[s]
            h_i = h_i + ps[s] * uis[s]
            t = j * (LANES * R) + lane_rows + s
            offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
            _store_pairs(H, offs2, mask2, h_r, h_i, LANES, BLOCK_D)
            # checkpoints inside the tile; if R divides CKPT_EVERY only a thread's last row can hold
            # one (lane·R + s + 1 ≡ 0 mod R needs s = R − 1)
            if CKPT_EVERY > 0 and CKPT_EVERY % (LANES * R) != 0:
                if CKPT_EVERY % R != 0 or s == R - 1:
                    _store_ckpt_rows(CKPT, h_r, h_i, t, pid_b, pid_d, L, D, n_ckpt, CKPT_EVERY, LANES, BLOCK_D)
        # the carry: h at the tile's last row (the last lane's last row)
        c_r = tl.sum(tl.where(last_lane, h_r, 0.0), axis=0)
        c_i = tl.sum(tl.where(last_lane, h_i, 0.0), axis=0)
        if CKPT_EVERY > 0 and CKPT_EVERY % (LANES * R) == 0:  # the carry itself, after every few tiles
            _store_ckpt_carry(CKPT, c_r, c_i, (j + 1) * (LANES * R), pid_b, cols, cmask, D, n_ckpt, CKPT_EVERY,
                              BLOCK_D)
