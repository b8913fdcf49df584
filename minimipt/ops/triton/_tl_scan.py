"""The scan's two kernels (launched by :mod:`minimipt.ops.triton.scan`, which states the equations):
``_scan_fwd_kernel`` writes h and the checkpoints, ``_scan_bwd_kernel`` recomputes h from them.

Both tile the same way. A program owns one batch row and ``BLOCK_D`` channels and walks the sequence in
tiles of ``LANES·R`` rows. A tile is loaded as ``R`` slabs of ``(LANES, BLOCK_D)``: slab ``s`` holds rows
``i·R + s`` (``i < LANES``), so each thread owns ``R`` *consecutive* rows of one channel and each slab row
is a contiguous run of ``D`` (coalesced loads and stores). Per tile:

1. per thread, the composition of its R maps (serial complex FMAs in registers, no shuffles);
2. one exclusive scan of those compositions across the ``LANES`` threads of a column, from the carry
   (:func:`~._tl._exclusive_scan`), gives the state entering each thread's rows;
3. per thread, the recurrence over its R rows.

Rows past ``L`` load p = θ = u = dL/dh = 0: the identity map, so a carry passes through them unchanged.
sin and cos once per element; no division.
"""

from __future__ import annotations

from ._tl import (_cmul, _exclusive_scan, _initial_state, _jit, _load_ckpt, _load_pairs, _pair_offsets,
                  _store_ckpt_carry, _store_ckpt_rows, _store_pairs, _thread_maps, tl)


@_jit
def _fwd_slab_loads(P, TH, U, j, base, cols, cmask, L, D, pid_d,
                    LANES: tl.constexpr, R: tl.constexpr, BLOCK_D: tl.constexpr):
    """Tile ``j``'s p, θ, Re u, Im u as float32, tuples of ``R`` slabs of ``(LANES, BLOCK_D)``."""
    lane_rows = tl.arange(0, LANES) * R
    ps = ()
    ths = ()
    urs = ()
    uis = ()
    for s in tl.static_range(R):
        t = j * (LANES * R) + lane_rows + s
        mask = (t < L)[:, None] & cmask[None, :]
        off = base + t.to(tl.int64)[:, None] * D + cols[None, :]
        ps = ps + (tl.load(P + off, mask=mask, other=0.0).to(tl.float32),)
        ths = ths + (tl.load(TH + off, mask=mask, other=0.0).to(tl.float32),)
        offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
        u_r, u_i = _load_pairs(U, offs2, mask2, LANES, BLOCK_D)
        urs = urs + (u_r,)
        uis = uis + (u_i,)
    return ps, ths, urs, uis


@_jit
def _scan_fwd_kernel(P, TH, U, H0, H, CKPT, BAD, L, D, n_tiles, n_ckpt,
                     HAS_H0: tl.constexpr, LANES: tl.constexpr, R: tl.constexpr, BLOCK_D: tl.constexpr,
                     PREFETCH: tl.constexpr, CKPT_EVERY: tl.constexpr, CHECK: tl.constexpr):
    """``h_t = a_t h_{t−1} + p_t u_t``, ``a_t = (1 − p_t) e^{iθ_t}``: H (B, L, D) pairs from P, TH (B, L, D)
    and U (B, L, D) pairs (any float dtype; float32 state), ``h_{−1}`` = H0 (B, D) pairs or 0; if
    ``CKPT_EVERY`` > 0 also the checkpoints ``CKPT[b, j] = h_{j·CKPT_EVERY − 1}`` (B, n_ckpt, D) pairs.

    Step 3 stores h slab by slab; the carry and every checkpoint are the stored h of that row, bit
    for bit. With ``PREFETCH`` the next tile's loads are issued before this tile's arithmetic.
    With ``CHECK`` the kernel also sets ``BAD`` (one int32) to 1 if any p lies outside [0, 1] or any
    p, θ, u, h0 is NaN or ±inf in float32, from the values it loads anyway (masked lanes load 0)."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)    # (BLOCK_D,)
    cmask = cols < D
    base = pid_b.to(tl.int64) * L * D
    lane_rows = tl.arange(0, LANES) * R               # (LANES,) each thread's first row in the tile
    c_r, c_i = _initial_state(H0, CKPT, pid_b, cols, cmask, D, n_ckpt, HAS_H0, CKPT_EVERY, BLOCK_D)  # (BLOCK_D,)
    last_lane = (tl.arange(0, LANES) == LANES - 1)[:, None]
    if CHECK:  # NaN fails every comparison, so `x < inf` is false for NaN and ±inf
        bad = tl.where((tl.abs(c_r) < float("inf")) & (tl.abs(c_i) < float("inf")), 0, 1)  # (BLOCK_D,)
    if PREFETCH:
        nx = _fwd_slab_loads(P, TH, U, 0, base, cols, cmask, L, D, pid_d, LANES, R, BLOCK_D)
    for j in tl.range(0, n_tiles):
        if PREFETCH:
            ps, ths, urs, uis = nx
            nx = _fwd_slab_loads(P, TH, U, j + 1, base, cols, cmask, L, D, pid_d, LANES, R, BLOCK_D)
        else:
            ps, ths, urs, uis = _fwd_slab_loads(P, TH, U, j, base, cols, cmask, L, D, pid_d, LANES, R, BLOCK_D)
        if CHECK:
            for s in tl.static_range(R):
                ok = ((ps[s] >= 0) & (ps[s] <= 1) & (tl.abs(ths[s]) < float("inf"))
                      & (tl.abs(urs[s]) < float("inf")) & (tl.abs(uis[s]) < float("inf")))  # (LANES, BLOCK_D)
                bad = bad | tl.max(tl.where(ok, 0, 1), axis=0)
        # 1. gates, and each thread's composition of its R maps (rows upward)  # (LANES, BLOCK_D) each
        _, _, ars, ais, A_r, A_i, B_r, B_i = _thread_maps(ps, ths, urs, uis, LANES, R, BLOCK_D)
        # 2. the state entering each thread's first row
        h_r, h_i, _, _ = _exclusive_scan(A_r, A_i, B_r, B_i, c_r, c_i, False, LANES)
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
    if CHECK:
        tl.atomic_or(BAD, tl.max(bad, axis=0), sem="relaxed")


@_jit
def _bwd_slab_loads(P, TH, U, GH, CKPT, j, base, cols, cmask, L, D, n_tiles, pid_b, pid_d,
                    LANES: tl.constexpr, R: tl.constexpr, BLOCK_D: tl.constexpr):
    """Tile ``j``'s p, θ, Re u, Im u, Re dL/dh, Im dL/dh (tuples of ``R`` slabs of ``(LANES, BLOCK_D)``,
    float32) and the checkpointed state entering the tile. Rows outside [0, L) and ``j < 0`` (the
    prefetch past the first tile) are masked."""
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
        u_r, u_i = _load_pairs(U, offs2, mask2, LANES, BLOCK_D)
        go_r, go_i = _load_pairs(GH, offs2, mask2, LANES, BLOCK_D)
        urs = urs + (u_r,)
        uis = uis + (u_i,)
        grs = grs + (go_r,)
        gis = gis + (go_i,)
    c_r, c_i = _load_ckpt(CKPT, j, pid_b, n_tiles, D, cols, cmask, BLOCK_D)
    return ps, ths, urs, uis, grs, gis, c_r, c_i


@_jit
def _store_grads(DP, DTH, DU, cs, sn, hp_r, hp_i, g_r, g_i, u_r, u_i, p, t, base, cols, cmask, L, D, pid_d,
                 ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """dp, dθ, du of a ``(ROWS, BLOCK_D)`` slab from g = ∂L/∂h_t (conjugate convention) and h_{t−1}:
    with r = e^{iθ_t} h_{t−1}, ∂L/∂p_t = Re(conj(g)(u_t − r)),
    ∂L/∂θ_t = (1 − p_t) Im(conj(g)·i r) = (p_t − 1)(Im r Re g − Re r Im g), ∂L/∂u_t = p_t g."""
    r_r = cs * hp_r - sn * hp_i
    r_i = cs * hp_i + sn * hp_r
    dp = g_r * (u_r - r_r) + g_i * (u_i - r_i)
    dth = (p - 1.0) * (r_i * g_r - r_r * g_i)
    mask = (t < L)[:, None] & cmask[None, :]
    off = base + t.to(tl.int64)[:, None] * D + cols[None, :]
    tl.store(DP + off, dp, mask=mask)
    tl.store(DTH + off, dth, mask=mask)
    offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
    _store_pairs(DU, offs2, mask2, p * g_r, p * g_i, ROWS, BLOCK_D)


@_jit
def _scan_bwd_kernel(P, TH, U, CKPT, GH, DP, DTH, DU, DH0, L, D, n_tiles,
                     HAS_H0: tl.constexpr, LANES: tl.constexpr, R: tl.constexpr, BLOCK_D: tl.constexpr,
                     PREFETCH: tl.constexpr):
    """dP, dTH (B, L, D), dU (B, L, D) pairs and dH0 (B, D) pairs from GH = dL/dh (B, L, D) pairs and the
    forward's checkpoints ``CKPT`` (one per tile of ``LANES·R`` rows), tiles walked from the end:

        h_{t−1} = the forward recurrence from the checkpoint entering the tile (steps 1–3, upward)
        k_t     = conj(a_t)(dL/dh_t + k_{t+1}),  k_L = 0,  k_t = ∂L/∂h_{t−1}   (steps 1–3, downward)
        g_t     = dL/dh_t + k_{t+1};   then dp, dθ, du by :func:`_store_grads`;   ∂L/∂h0 = k_0."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    base = pid_b.to(tl.int64) * L * D
    lane_rows = tl.arange(0, LANES) * R
    k_r = tl.zeros([BLOCK_D], dtype=tl.float32)   # k at the first row after the tile
    k_i = tl.zeros([BLOCK_D], dtype=tl.float32)
    if PREFETCH:
        nx = _bwd_slab_loads(P, TH, U, GH, CKPT, n_tiles - 1, base, cols, cmask, L, D, n_tiles, pid_b, pid_d,
                             LANES, R, BLOCK_D)
    for kk in tl.range(0, n_tiles):
        j = n_tiles - 1 - kk
        if PREFETCH:
            ps, ths, urs, uis, grs, gis, c_r, c_i = nx
            nx = _bwd_slab_loads(P, TH, U, GH, CKPT, j - 1, base, cols, cmask, L, D, n_tiles, pid_b, pid_d,
                                 LANES, R, BLOCK_D)
        else:
            ps, ths, urs, uis, grs, gis, c_r, c_i = _bwd_slab_loads(
                P, TH, U, GH, CKPT, j, base, cols, cmask, L, D, n_tiles, pid_b, pid_d, LANES, R, BLOCK_D)
        # 1. gates, and each thread's forward composition (rows upward)  # (LANES, BLOCK_D) each
        css, sns, ars, ais, Af_r, Af_i, Bf_r, Bf_i = _thread_maps(ps, ths, urs, uis, LANES, R, BLOCK_D)
        # ... and its reverse composition (rows downward): x ↦ conj(a)(dL/dh + x)
        Ar_r = tl.full([LANES, BLOCK_D], 1.0, tl.float32)
        Ar_i = Ar_r * 0.0
        Br_r = Ar_r * 0.0
        Br_i = Ar_r * 0.0
        for s in tl.static_range(R - 1, -1, -1):
            Ar_r, Ar_i = _cmul(ars[s], -ais[s], Ar_r, Ar_i)
            Br_r, Br_i = _cmul(ars[s], -ais[s], Br_r + grs[s], Br_i + gis[s])
        # 2. the states entering each thread's rows: h before its first row, k after its last
        h_r, h_i, _, _ = _exclusive_scan(Af_r, Af_i, Bf_r, Bf_i, c_r, c_i, False, LANES)
        kn_r, kn_i, k_r, k_i = _exclusive_scan(Ar_r, Ar_i, Br_r, Br_i, k_r, k_i, True, LANES)
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
