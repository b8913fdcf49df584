"""The fused mixer's kernels (launched by :mod:`minimipt.ops.triton.mixer`, which states the equations):
the MIPT recurrence read straight from the layer's in-projection output ``X`` (B, L, 4D) =
``[z | θ | u_re | u_im]`` (row stride 4D), with ``p = σ(z)`` formed on load, and only ``y = Re h``
(B, L, D) float32 written.

Tiling: one program per (batch row, ``BLOCK_D`` channels) walks the sequence in ``(BLOCK_L, BLOCK_D)``
tiles. The forward scans each tile with ``tl.associative_scan`` from the carry (:func:`_tile_step`); the
backward recomputes h from the forward's checkpoints and runs both scans of the tile in exclusive form
(:func:`~._tl._exclusive_scan`). Accurate sin and cos; float32 state; the only division is
``1 / (1 + e^{−|z|})``, in [1/2, 1].
"""

from __future__ import annotations

from ._tl import (_cmul, _compose, _exclusive_scan, _initial_state, _jit, _load_ckpt, _store_ckpt_carry,
                  _store_ckpt_rows, tl)


@_jit
def _gates(z):
    """``(p, 1 − p) = (σ(z), σ(−z))`` in float32, each to full relative precision and without
    overflow: ``e = exp(−|z|) ∈ (0, 1]``, ``σ(|z|) = 1 / (1 + e)``, ``σ(−|z|) = e / (1 + e)``.
    ``z = −∞`` (padded rows) gives ``(0, 1)``: the identity map ``x ↦ 1·x + 0``."""
    e = tl.exp(-tl.abs(z))
    r = 1.0 / (1.0 + e)
    s = e * r
    pos = z >= 0
    return tl.where(pos, r, s), tl.where(pos, s, r)


@_jit
def _mixer_loads(X, t, cols, cmask, L, D, pid_b):
    """p, 1 − p, θ, Re u, Im u (float32 ``(BLOCK_L, BLOCK_D)``) of rows ``t`` of ``X`` (B, L, 4D).
    Rows outside [0, L) give p = θ = u = 0, 1 − p = 1: the identity map, a carry passes unchanged."""
    D4 = 4 * D
    mask = ((t >= 0) & (t < L))[:, None] & cmask[None, :]
    off = (pid_b.to(tl.int64) * L + t.to(tl.int64))[:, None] * D4 + cols[None, :]
    z = tl.load(X + off, mask=mask, other=float("-inf")).to(tl.float32)
    th = tl.load(X + off + D, mask=mask, other=0.0).to(tl.float32)
    u_r = tl.load(X + off + 2 * D, mask=mask, other=0.0).to(tl.float32)
    u_i = tl.load(X + off + 3 * D, mask=mask, other=0.0).to(tl.float32)
    p, m = _gates(z)
    return p, m, th, u_r, u_i


@_jit
def _tile_step(CKPT, m, cs, sn, p, u_r, u_i, c_r, c_i, t, k, pid_b, pid_d, cols, cmask, L, D, n_ckpt,
               CKPT_EVERY: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """One ``(BLOCK_L, BLOCK_D)`` tile of the forward: ``h_t = m_t e^{iθ_t} h_{t−1} + p_t u_t`` from the
    carry ``c`` (``tl.associative_scan`` of the maps), the checkpoints of tile ``k`` (inside it, or the
    carry after it), and the next carry (h at the tile's last row). Returns ``h_r, h_i``
    (BLOCK_L, BLOCK_D) and ``c_r, c_i`` (BLOCK_D,)."""
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


@_jit
def _mixer_fwd_kernel(X, H0, Y, CKPT, L, D, n_tiles, n_ckpt,
                      HAS_H0: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
                      PREFETCH: tl.constexpr, CKPT_EVERY: tl.constexpr):
    """``Y[b, t, d] = Re h_t`` (B, L, D) float32 with ``h_t = (1 − p_t) e^{iθ_t} h_{t−1} + p_t u_t``,
    ``p = σ(z)``, ``h_{−1} = H0`` (B, D) pairs or 0; if ``CKPT_EVERY`` > 0 also the state entering every
    chunk of ``CKPT_EVERY`` rows, ``CKPT[b, j] = h_{j·CKPT_EVERY − 1}`` (B, n_ckpt, D) pairs. One program
    per (batch row, ``BLOCK_D`` channels), tiles of ``BLOCK_L`` rows scanned by ``tl.associative_scan``."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = tl.arange(0, BLOCK_L)                      # (BLOCK_L,)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)    # (BLOCK_D,)
    cmask = cols < D
    c_r, c_i = _initial_state(H0, CKPT, pid_b, cols, cmask, D, n_ckpt, HAS_H0, CKPT_EVERY, BLOCK_D)  # (BLOCK_D,)
    if PREFETCH:  # the next tile's loads are issued before this tile's scan
        p_n, m_n, th_n, ur_n, ui_n = _mixer_loads(X, rows, cols, cmask, L, D, pid_b)
    for k in tl.range(0, n_tiles):
        t = k * BLOCK_L + rows
        if PREFETCH:
            p, m, th, u_r, u_i = p_n, m_n, th_n, ur_n, ui_n
            p_n, m_n, th_n, ur_n, ui_n = _mixer_loads(X, t + BLOCK_L, cols, cmask, L, D, pid_b)
        else:
            p, m, th, u_r, u_i = _mixer_loads(X, t, cols, cmask, L, D, pid_b)
        cs = tl.cos(th)
        sn = tl.sin(th)
        h_r, _, c_r, c_i = _tile_step(CKPT, m, cs, sn, p, u_r, u_i, c_r, c_i, t, k, pid_b, pid_d, cols, cmask,
                                      L, D, n_ckpt, CKPT_EVERY, BLOCK_L, BLOCK_D)
        mask = (t < L)[:, None] & cmask[None, :]
        tl.store(Y + (pid_b.to(tl.int64) * L + t.to(tl.int64))[:, None] * D + cols[None, :], h_r, mask=mask)


@_jit
def _mixer_bwd_loads(X, GY, CKPT, j, cols, cmask, L, D, n_tiles, pid_b,
                     BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """Tile ``j``'s p, 1 − p, θ, u (from ``X``), dL/dy (from ``GY`` (B, L, D)) and the checkpointed
    state entering the tile. ``j < 0`` (the prefetch past the first tile) is masked."""
    t = j * BLOCK_L + tl.arange(0, BLOCK_L)
    p, m, th, u_r, u_i = _mixer_loads(X, t, cols, cmask, L, D, pid_b)
    mask = ((t >= 0) & (t < L))[:, None] & cmask[None, :]
    go = tl.load(GY + (pid_b.to(tl.int64) * L + t.to(tl.int64))[:, None] * D + cols[None, :],
                 mask=mask, other=0.0).to(tl.float32)
    c_r, c_i = _load_ckpt(CKPT, j, pid_b, n_tiles, D, cols, cmask, BLOCK_D)
    return p, m, th, u_r, u_i, go, c_r, c_i


@_jit
def _mixer_bwd_kernel(X, CKPT, GY, DX, DH0, L, D, n_tiles,
                      HAS_H0: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
                      PREFETCH: tl.constexpr):
    """The gradient of ``X`` (B, L, 4D) in ``X``'s dtype from a real ``dL/dy`` (B, L, D), and ∂L/∂h0,
    from the forward's checkpoints, with ``dL/dh_t = dL/dy_t + 0i``:

        h_{t−1} = the forward scan from the checkpoint entering the tile (exclusive form)
        k_t     = conj(a_t)(dL/dh_t + k_{t+1}),  k_L = 0;    g_t = dL/dh_t + k_{t+1}
        r_t     = e^{iθ_t} h_{t−1}
        ∂L/∂z_t = Re(conj(g_t)(u_t − r_t)) · p_t (1 − p_t)
        ∂L/∂θ_t = (1 − p_t) Im(conj(g_t) · i r_t) = (p_t − 1)(Im r_t Re g_t − Re r_t Im g_t)
        ∂L/∂u_t = p_t g_t  (re and im parts),        ∂L/∂h0 = k_0

    ``CKPT`` holds the state entering every ``BLOCK_L`` rows (B, n_tiles, D) pairs."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = tl.arange(0, BLOCK_L)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    k_r = tl.zeros([BLOCK_D], dtype=tl.float32)   # k at the first row after the tile
    k_i = tl.zeros([BLOCK_D], dtype=tl.float32)
    if PREFETCH:
        nx = _mixer_bwd_loads(X, GY, CKPT, n_tiles - 1, cols, cmask, L, D, n_tiles, pid_b, BLOCK_L, BLOCK_D)
    for kk in tl.range(0, n_tiles):
        j = n_tiles - 1 - kk
        t = j * BLOCK_L + rows
        if PREFETCH:
            p, m, th, u_r, u_i, go, c_r, c_i = nx
            nx = _mixer_bwd_loads(X, GY, CKPT, j - 1, cols, cmask, L, D, n_tiles, pid_b, BLOCK_L, BLOCK_D)
        else:
            p, m, th, u_r, u_i, go, c_r, c_i = _mixer_bwd_loads(X, GY, CKPT, j, cols, cmask, L, D, n_tiles,
                                                                pid_b, BLOCK_L, BLOCK_D)
        cs = tl.cos(th)
        sn = tl.sin(th)
        a_r = m * cs
        a_i = m * sn
        # h_{t-1} at every row: the forward scan of x ↦ a_t x + p_t u_t from the checkpoint
        hp_r, hp_i, _, _ = _exclusive_scan(a_r, a_i, p * u_r, p * u_i, c_r, c_i, False, BLOCK_L)
        # k_{t+1} at every row: the reverse scan of x ↦ conj(a_t)(dL/dh_t + x), dL/dh_t = go + 0i
        ga_r, ga_i = _cmul(a_r, -a_i, go, go * 0.0)
        kn_r, kn_i, k_r, k_i = _exclusive_scan(a_r, -a_i, ga_r, ga_i, k_r, k_i, True, BLOCK_L)
        g_r = go + kn_r
        g_i = kn_i
        r_r = cs * hp_r - sn * hp_i
        r_i = cs * hp_i + sn * hp_r
        dp = g_r * (u_r - r_r) + g_i * (u_i - r_i)
        dz = dp * p * m
        dth = -m * (r_i * g_r - r_r * g_i)
        mask = ((t >= 0) & (t < L))[:, None] & cmask[None, :]
        off = (pid_b.to(tl.int64) * L + t.to(tl.int64))[:, None] * (4 * D) + cols[None, :]
        ty = DX.dtype.element_ty
        tl.store(DX + off, dz.to(ty), mask=mask)
        tl.store(DX + off + D, dth.to(ty), mask=mask)
        tl.store(DX + off + 2 * D, (p * g_r).to(ty), mask=mask)
        tl.store(DX + off + 3 * D, (p * g_i).to(ty), mask=mask)
    if HAS_H0:  # k_0 = conj(a_0) g_0 = ∂L/∂h0
        two = tl.arange(0, 2)
        tl.store(DH0 + ((pid_b.to(tl.int64) * D + cols)[:, None] * 2 + two[None, :]),
                 tl.join(k_r, k_i), mask=cmask[:, None])
