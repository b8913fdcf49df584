"""The backward kernels of the Triton scan (:mod:`minimipt.ops.triton.scan`): ``_bwd_kernel``
(reads the saved h, v2), ``_bwd_recompute_kernel`` (recomputes h from checkpoints, v3) and
``_bwd_rows_kernel`` (the same with consecutive rows per thread, v4; notes/kernel.md).
"""

from __future__ import annotations

from ._tl import (_cmul, _compose, _cos_sin, _jit, _load_ckpt, _load_pairs, _pair_offsets, _shifted_scan,
                  _store_grads, _thread_maps, tl)


@_jit
def _bwd_loads(P, TH, U, H, GH, t, base, cols, cmask, L, D, pid_d,
               STRIDED: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """Everything the backward needs at rows ``t``: p, θ at t + 1 (p = 1 past the end, so the
    reverse gate is 0 there), dL/dh at t, p, θ, u at t, and h at t − 1 (0 at t = 0). Rows outside
    [0, L) are masked: the prefetch asks for the tile before the first one (t < 0)."""
    inside = (t >= 0) & (t < L)
    mask = inside[:, None] & cmask[None, :]
    off = base + t.to(tl.int64)[:, None] * D + cols[None, :]
    mask1 = (inside & (t + 1 < L))[:, None] & cmask[None, :]
    p1 = tl.load(P + off + D, mask=mask1, other=1.0).to(tl.float32)
    th1 = tl.load(TH + off + D, mask=mask1, other=0.0).to(tl.float32)
    offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
    go_r, go_i = _load_pairs(GH, offs2, mask2, STRIDED, BLOCK_L, BLOCK_D)
    p = tl.load(P + off, mask=mask, other=0.0).to(tl.float32)
    th = tl.load(TH + off, mask=mask, other=0.0).to(tl.float32)
    u_r, u_i = _load_pairs(U, offs2, mask2, STRIDED, BLOCK_L, BLOCK_D)
    hp_r, hp_i = _load_pairs(H, offs2 - 2 * D, mask2 & (t >= 1)[:, None], STRIDED, BLOCK_L, BLOCK_D)
    return p1, th1, go_r, go_i, p, th, u_r, u_i, hp_r, hp_i


@_jit
def _bwd_kernel(P, TH, U, H0, H, GH, DP, DTH, DU, DH0, L, D, n_tiles,
                HAS_H0: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
                FAST_TRIG: tl.constexpr, STRIDED: tl.constexpr, PREFETCH: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = tl.arange(0, BLOCK_L)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    two = tl.arange(0, 2)
    cmask = cols < D
    base = pid_b.to(tl.int64) * L * D
    if HAS_H0:
        h0 = tl.load(H0 + ((pid_b.to(tl.int64) * D + cols)[:, None] * 2 + two[None, :]),
                     mask=cmask[:, None], other=0.0).to(tl.float32)
        h0_r, h0_i = tl.split(h0)
    c_r = tl.zeros([BLOCK_D], dtype=tl.float32)      # g at the first row after the tile
    c_i = tl.zeros([BLOCK_D], dtype=tl.float32)
    first = (rows == 0)[:, None]
    if PREFETCH:
        nx = _bwd_loads(P, TH, U, H, GH, (n_tiles - 1) * BLOCK_L + rows, base, cols, cmask, L, D, pid_d,
                        STRIDED, BLOCK_L, BLOCK_D)
    for kk in tl.range(0, n_tiles):
        t = (n_tiles - 1 - kk) * BLOCK_L + rows
        if PREFETCH:
            p1, th1, go_r, go_i, p, th, u_r, u_i, hp_r, hp_i = nx
            nx = _bwd_loads(P, TH, U, H, GH, t - BLOCK_L, base, cols, cmask, L, D, pid_d,
                            STRIDED, BLOCK_L, BLOCK_D)
        else:
            p1, th1, go_r, go_i, p, th, u_r, u_i, hp_r, hp_i = _bwd_loads(
                P, TH, U, H, GH, t, base, cols, cmask, L, D, pid_d, STRIDED, BLOCK_L, BLOCK_D)
        # g_t = gout_t + conj(a_{t+1}) g_{t+1}: a reverse scan of the maps x ↦ conj(a_{t+1}) x + gout_t
        m1 = 1.0 - p1
        cs1, sn1 = _cos_sin(th1, FAST_TRIG)
        F_r, F_i, G_r, G_i = tl.associative_scan((m1 * cs1, -m1 * sn1, go_r, go_i), 0, _compose,
                                                 reverse=True)
        g_r = G_r + F_r * c_r[None, :] - F_i * c_i[None, :]
        g_i = G_i + F_r * c_i[None, :] + F_i * c_r[None, :]
        if HAS_H0:
            at0 = (t == 0)[:, None]
            hp_r = tl.where(at0, h0_r[None, :], hp_r)
            hp_i = tl.where(at0, h0_i[None, :], hp_i)
        cs, sn = _cos_sin(th, FAST_TRIG)
        _store_grads(DP, DTH, DU, cs, sn, hp_r, hp_i, g_r, g_i, u_r, u_i, p, t, base, cols, cmask, L, D, pid_d,
                     BLOCK_L, BLOCK_D)
        c_r = tl.sum(tl.where(first, g_r, 0.0), axis=0)
        c_i = tl.sum(tl.where(first, g_i, 0.0), axis=0)
    if HAS_H0:  # c = g_0 now; ∂L/∂h0 = conj(a_0) g_0
        off0 = base + cols
        p0 = tl.load(P + off0, mask=cmask, other=0.0).to(tl.float32)
        th0 = tl.load(TH + off0, mask=cmask, other=0.0).to(tl.float32)
        m0 = 1.0 - p0
        cs0, sn0 = _cos_sin(th0, FAST_TRIG)
        d_r, d_i = _cmul(m0 * cs0, -m0 * sn0, c_r, c_i)
        tl.store(DH0 + ((pid_b.to(tl.int64) * D + cols)[:, None] * 2 + two[None, :]),
                 tl.join(d_r, d_i), mask=cmask[:, None])


@_jit
def _rc_loads(P, TH, U, GH, CKPT, j, base, cols, cmask, L, D, n_tiles, pid_b, pid_d,
              BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """The recomputing backward's loads for tile ``j`` (rows ``j·BLOCK_L + r``): p, θ, u, dL/dh
    and the checkpointed state entering the tile. Rows outside [0, L) and ``j < 0`` (the prefetch
    past the first tile) are masked; padded rows give p = θ = u = dL/dh = 0 (identity maps)."""
    t = j * BLOCK_L + tl.arange(0, BLOCK_L)
    inside = (t >= 0) & (t < L)
    mask = inside[:, None] & cmask[None, :]
    off = base + t.to(tl.int64)[:, None] * D + cols[None, :]
    p = tl.load(P + off, mask=mask, other=0.0).to(tl.float32)
    th = tl.load(TH + off, mask=mask, other=0.0).to(tl.float32)
    offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
    u_r, u_i = _load_pairs(U, offs2, mask2, False, BLOCK_L, BLOCK_D)
    go_r, go_i = _load_pairs(GH, offs2, mask2, False, BLOCK_L, BLOCK_D)
    c_r, c_i = _load_ckpt(CKPT, j, pid_b, n_tiles, D, cols, cmask, BLOCK_D)
    return p, th, u_r, u_i, go_r, go_i, c_r, c_i


@_jit
def _bwd_recompute_kernel(P, TH, U, CKPT, GH, DP, DTH, DU, DH0, L, D, n_tiles,
                          HAS_H0: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
                          SHIFT: tl.constexpr, PREFETCH: tl.constexpr):
    """Backward from checkpoints (v3): tiles of ``BLOCK_L`` rows walked from the end. Per tile,
    from the state entering it (``CKPT``, written by the forward every ``BLOCK_L`` rows):

        h_{t−1}  = the forward scan of (a_t, b_t), recomputed in registers (exclusive form)
        k_t      = conj(a_t) (dL/dh_t + k_{t+1}),  k_L = 0    (reverse scan; k_t = ∂L/∂h_{t−1})
        g_t      = dL/dh_t + k_{t+1}                          (the total gradient at h_t)

    then dp, dθ, du as in :func:`_bwd_kernel`, and ∂L/∂h0 = k_0. Each row's sin and cos are
    computed once; ``h`` is never read (40 instead of 48 bytes per element)."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = tl.arange(0, BLOCK_L)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    base = pid_b.to(tl.int64) * L * D
    k_r = tl.zeros([BLOCK_D], dtype=tl.float32)   # k at the first row after the tile
    k_i = tl.zeros([BLOCK_D], dtype=tl.float32)
    if PREFETCH:
        nx = _rc_loads(P, TH, U, GH, CKPT, n_tiles - 1, base, cols, cmask, L, D, n_tiles, pid_b, pid_d,
                       BLOCK_L, BLOCK_D)
    for kk in tl.range(0, n_tiles):
        j = n_tiles - 1 - kk
        t = j * BLOCK_L + rows
        if PREFETCH:
            p, th, u_r, u_i, go_r, go_i, c_r, c_i = nx
            nx = _rc_loads(P, TH, U, GH, CKPT, j - 1, base, cols, cmask, L, D, n_tiles, pid_b, pid_d,
                           BLOCK_L, BLOCK_D)
        else:
            p, th, u_r, u_i, go_r, go_i, c_r, c_i = _rc_loads(
                P, TH, U, GH, CKPT, j, base, cols, cmask, L, D, n_tiles, pid_b, pid_d, BLOCK_L, BLOCK_D)
        m = 1.0 - p
        cs, sn = _cos_sin(th, False)
        a_r = m * cs
        a_i = m * sn
        # h_{t-1} at every row: the forward scan of x ↦ a_t x + p_t u_t from the checkpoint
        hp_r, hp_i, _, _ = _shifted_scan(a_r, a_i, p * u_r, p * u_i, c_r, c_i, False, SHIFT, BLOCK_L)
        # k_{t+1} at every row: the reverse scan of x ↦ conj(a_t) (dL/dh_t + x) from the tile above
        ga_r, ga_i = _cmul(a_r, -a_i, go_r, go_i)
        kn_r, kn_i, k_r, k_i = _shifted_scan(a_r, -a_i, ga_r, ga_i, k_r, k_i, True, SHIFT, BLOCK_L)
        g_r = go_r + kn_r
        g_i = go_i + kn_i
        _store_grads(DP, DTH, DU, cs, sn, hp_r, hp_i, g_r, g_i, u_r, u_i, p, t, base, cols, cmask, L, D, pid_d,
                     BLOCK_L, BLOCK_D)
    if HAS_H0:  # k_0 = conj(a_0) g_0 = ∂L/∂h0
        two = tl.arange(0, 2)
        tl.store(DH0 + ((pid_b.to(tl.int64) * D + cols)[:, None] * 2 + two[None, :]),
                 tl.join(k_r, k_i), mask=cmask[:, None])


@_jit
def _slab_loads(P, TH, U, GH, CKPT, j, base, cols, cmask, L, D, n_tiles, pid_b, pid_d,
                LANES: tl.constexpr, R: tl.constexpr, BLOCK_D: tl.constexpr):
    """The ``shift=2`` backward's loads for tile ``j`` as ``R`` slabs of ``(LANES, BLOCK_D)``:
    slab ``s`` holds rows ``j·LANES·R + i·R + s`` (``i < LANES``), so each thread owns ``R``
    consecutive rows. Tuples (one entry per slab) of p, θ, Re u, Im u, Re dL/dh, Im dL/dh, then
    the checkpointed state entering the tile; masking as in :func:`_rc_loads`."""
    lane_rows = tl.arange(0, LANES) * R
    ps = ()
    ths = ()
    urs = ()
    uis = ()
    grs = ()
    gis = ()
    for s in tl.static_range(R):
        t = j * (LANES * R) + lane_rows + s
        mask = ((t >= 0) & (t < L))[:, None] & cmask[None, :]
        off = base + t.to(tl.int64)[:, None] * D + cols[None, :]
        ps = ps + (tl.load(P + off, mask=mask, other=0.0).to(tl.float32),)
        ths = ths + (tl.load(TH + off, mask=mask, other=0.0).to(tl.float32),)
        offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
        u_r, u_i = _load_pairs(U, offs2, mask2, False, LANES, BLOCK_D)
        go_r, go_i = _load_pairs(GH, offs2, mask2, False, LANES, BLOCK_D)
        urs = urs + (u_r,)
        uis = uis + (u_i,)
        grs = grs + (go_r,)
        gis = gis + (go_i,)
    c_r, c_i = _load_ckpt(CKPT, j, pid_b, n_tiles, D, cols, cmask, BLOCK_D)
    return ps, ths, urs, uis, grs, gis, c_r, c_i


@_jit
def _bwd_rows_kernel(P, TH, U, CKPT, GH, DP, DTH, DU, DH0, L, D, n_tiles,
                     HAS_H0: tl.constexpr, LANES: tl.constexpr, R: tl.constexpr, BLOCK_D: tl.constexpr,
                     PREFETCH: tl.constexpr):
    """The recomputing backward with ``shift=2`` (v4): the same equations as
    :func:`_bwd_recompute_kernel`, but each thread owns ``R`` consecutive rows of the tile
    (``BLOCK_L = LANES·R``), so most of both scans is a plain recurrence in registers:

    1. per thread, the composition of its R forward maps ``x ↦ a_t x + p_t u_t`` and of its R
       reverse maps ``x ↦ conj(a_t)(dL/dh_t + x)`` (sequential, no shuffles);
    2. an exclusive scan of those compositions across the ``LANES`` threads of a column (the
       doubled-field scan of ``shift=0``, over LANES instead of BLOCK_L elements) gives the
       state entering each thread's rows: h_{t−1} at its first row, k_{t+1} at its last;
    3. per thread, the recurrences ``h_t = a_t h_{t−1} + p_t u_t`` (rows upward) and
       ``k_t = conj(a_t)(dL/dh_t + k_{t+1})`` (rows downward) give h_{t−1} and k_{t+1} at every
       row, then dp, dθ, du as in :func:`_store_grads`.

    sin and cos once per element; no division; the loads and stores are those of ``shift=0``."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    base = pid_b.to(tl.int64) * L * D
    lane_rows = tl.arange(0, LANES) * R
    k_r = tl.zeros([BLOCK_D], dtype=tl.float32)   # k at the first row after the tile
    k_i = tl.zeros([BLOCK_D], dtype=tl.float32)
    if PREFETCH:
        nx = _slab_loads(P, TH, U, GH, CKPT, n_tiles - 1, base, cols, cmask, L, D, n_tiles, pid_b, pid_d,
                         LANES, R, BLOCK_D)
    for kk in tl.range(0, n_tiles):
        j = n_tiles - 1 - kk
        if PREFETCH:
            ps, ths, urs, uis, grs, gis, c_r, c_i = nx
            nx = _slab_loads(P, TH, U, GH, CKPT, j - 1, base, cols, cmask, L, D, n_tiles, pid_b, pid_d,
                             LANES, R, BLOCK_D)
        else:
            ps, ths, urs, uis, grs, gis, c_r, c_i = _slab_loads(
                P, TH, U, GH, CKPT, j, base, cols, cmask, L, D, n_tiles, pid_b, pid_d, LANES, R, BLOCK_D)
        # 1. gates, and each thread's forward composition (rows upward)  # (LANES, BLOCK_D) each
        css, sns, ars, ais, Af_r, Af_i, Bf_r, Bf_i = _thread_maps(ps, ths, urs, uis, False, LANES, R, BLOCK_D)
        # ... and its reverse composition (rows downward): x ↦ conj(a)(dL/dh + x)
        Ar_r = tl.full([LANES, BLOCK_D], 1.0, tl.float32)
        Ar_i = Ar_r * 0.0
        Br_r = Ar_r * 0.0
        Br_i = Ar_r * 0.0
        for s in tl.static_range(R - 1, -1, -1):
            Ar_r, Ar_i = _cmul(ars[s], -ais[s], Ar_r, Ar_i)
            Br_r, Br_i = _cmul(ars[s], -ais[s], Br_r + grs[s], Br_i + gis[s])
        # 2. the states entering each thread's rows: h before its first row, k after its last
        h_r, h_i, _, _ = _shifted_scan(Af_r, Af_i, Bf_r, Bf_i, c_r, c_i, False, 0, LANES)
        kn_r, kn_i, k_r, k_i = _shifted_scan(Ar_r, Ar_i, Br_r, Br_i, k_r, k_i, True, 0, LANES)
        # 3. h_{t-1} at every row (upward), then k_{t+1}, g_t and the gradients (downward)
        hps_r = ()
        hps_i = ()
        for s in tl.static_range(R):
            hps_r = hps_r + (h_r,)
            hps_i = hps_i + (h_i,)
            h_r, h_i = _cmul(ars[s], ais[s], h_r, h_i)
            h_r = h_r + ps[s] * urs[s]
            h_i = h_i + ps[s] * uis[s]
        for s in tl.static_range(R - 1, -1, -1):
            g_r = grs[s] + kn_r
            g_i = gis[s] + kn_i
            kn_r, kn_i = _cmul(ars[s], -ais[s], g_r, g_i)
            t = j * (LANES * R) + lane_rows + s
            _store_grads(DP, DTH, DU, css[s], sns[s], hps_r[s], hps_i[s], g_r, g_i, urs[s], uis[s], ps[s],
                         t, base, cols, cmask, L, D, pid_d, LANES, BLOCK_D)
    if HAS_H0:  # k_0 = ∂L/∂h0
        two = tl.arange(0, 2)
        tl.store(DH0 + ((pid_b.to(tl.int64) * D + cols)[:, None] * 2 + two[None, :]),
                 tl.join(k_r, k_i), mask=cmask[:, None])
