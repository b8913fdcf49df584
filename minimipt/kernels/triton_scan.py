"""A fused Triton kernel for the MIPT recurrence (forward and backward), method ``"triton"``.

It computes exactly what :func:`minimipt.scan.scan_sequential` defines,

    h_t = a_t h_{t-1} + b_t,     a_t = (1 - p_t) e^{iθ_t},   b_t = p_t u_t,     h_{-1} = h0,

but reads ``p``, ``θ`` and ``u`` directly and forms ``a`` and ``b`` in registers, so neither is
ever written to memory. The state is float32 whatever the input dtype (float32 or bf16).

Parallelisation. Our layout is ``(B, L, D)`` with ``D`` contiguous. One program owns one batch row
and ``BLOCK_D`` neighbouring channels and walks the sequence in tiles of ``BLOCK_L`` tokens: every
load and store is a ``(BLOCK_L, BLOCK_D)`` tile whose rows are contiguous runs of ``D``, so the
accesses are coalesced. Inside a tile ``tl.associative_scan`` along ``L`` composes the affine maps
``x ↦ a x + b``; the state entering the tile (the carry, one complex number per channel) is added
as ``h = S + A · carry`` with ``(A, S)`` the scanned pairs. ``|a| ≤ 1``, so the products ``A`` only
shrink: nothing overflows or divides, at any length.
The rows forward (``fwd_config``'s 8th field ``rows=True``, notes/kernel.md v5) gives each thread
``R`` consecutive rows instead: it composes their maps serially, an exclusive scan across the
threads of a column joins them, and ``h_t = a_t h_{t−1} + b_t`` runs in registers.

Backward (PyTorch's convention ``grad = ∂L/∂Re + i ∂L/∂Im``; ``g_t`` the total gradient at ``h_t``):

    g_t = gout_t + conj(a_{t+1}) g_{t+1}          (a reverse scan, tiles walked from the end)
    r_t = e^{iθ_t} h_{t-1}
    ∂L/∂p_t = Re(conj(g_t) (u_t − r_t))
    ∂L/∂θ_t = −(1 − p_t) Im(r_t conj(g_t))
    ∂L/∂u_t = p_t g_t
    ∂L/∂h0  = conj(a_0) g_0

Two backwards (``BACKWARD``; notes/kernel.md v2, v3):

* ``"saved_h"``: the forward saves ``h``; the backward recomputes ``a`` from ``p`` and ``θ`` at t and
  t + 1 and reads ``h`` at ``t − 1``.
* ``"recompute"``: the forward saves only the state entering every ``BLOCK_L`` rows; per tile the
  backward recomputes ``h_{t−1}`` by the forward scan from that checkpoint and runs the reverse scan
  as ``k_t = conj(a_t)(gout_t + k_{t+1})`` (``g_t = gout_t + k_{t+1}``, ``∂L/∂h0 = k_0``), so each
  row's gate is formed once, and ``h`` (8 B/element) is neither kept for backward nor read.

Bytes per complex element at float32 inputs: forward reads p, θ (4 + 4), u (8), writes h (8) = 24;
backward reads gout, p, θ, u, h (8 + 4 + 4 + 8 + 8) and writes dp, dθ, du (4 + 4 + 8) = 48, or
40 + 8/BLOCK_L with ``"recompute"`` (and the forward 24 + 8/BLOCK_L).
With bf16 ``p``, ``θ`` (and ``u`` given as bf16 (re, im) pairs) the reads shrink accordingly.

:mod:`minimipt.kernels` imports this module (and so Triton) only on first use on a CUDA device;
without Triton the module still imports, and :func:`scan_triton` raises ``ImportError``.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # keep the module importable without Triton (docs, package walks); scan_triton raises
    triton = tl = libdevice = None


def _jit(fn):
    """``triton.jit`` when Triton is installed, else the plain function (never launched)."""
    return triton.jit(fn) if triton is not None else fn


__all__ = ["scan_triton", "TritonScan", "DEFAULT_CONFIG", "BWD_CONFIG", "RECOMPUTE_CONFIG", "BACKWARD",
           "BACKWARDS"]

# (BLOCK_L, BLOCK_D, num_warps, fast_trig, strided, prefetch[, num_stages[, rows]]): the forward and
# backward kernels' launch configurations, chosen by the sweep of minimipt.bench (notes/kernel.md).
# rows (forward only; default False): True runs _fwd_rows_kernel (v5), each thread owning
# BLOCK_L·BLOCK_D/(32·num_warps) consecutive rows; give num_stages (None: Triton's default) before it
DEFAULT_CONFIG = (16, 16, 1, False, False, True)
BWD_CONFIG = (16, 32, 4, False, False, False)

# The two backwards (notes/kernel.md, v2 and v3):
#   "saved_h"    the forward saves h (B, L, D) complex; the backward reads it (48 B/element)
#   "recompute"  the forward saves only the state entering every BLOCK_L rows (B, L/BLOCK_L, D);
#                the backward recomputes h tile by tile in registers (40 B/element, and h is not
#                kept alive for backward)
BACKWARDS = ("saved_h", "recompute")
# "recompute" is the default since the H200 sweep of 2026-11-28 (results/bench/scan_sweep_h200.json):
# forward+backward through autograd 3.37 ms vs 3.43 ms for "saved_h" (both accurate trig), and h
# is no longer kept alive for backward (8 B per element of training memory)
BACKWARD = "recompute"
# the recomputing backward's (BLOCK_L, BLOCK_D, num_warps, shift, prefetch); shift 0: the
# shifted states by an exclusive scan (composition), 1: by tl.gather, 2: each thread owns
# BLOCK_L·BLOCK_D/(32·num_warps) consecutive rows and runs the recurrences itself (v4).
# (16, 16, 2, 2, False) was the fastest of the H200 sweep of session 3 (results/bench/scan_h200.json):
# backward 1.98 ms at (32, 512, 8192) (v3's (16, 8, 1, 0, False): 2.47 ms in the same run), forward+
# backward through autograd 2.94 ms vs 3.44
RECOMPUTE_CONFIG = (16, 16, 2, 2, False)


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
    if HAS_H0:
        two = tl.arange(0, 2)                         # (re, im)
        c = tl.load(H0 + ((pid_b.to(tl.int64) * D + cols)[:, None] * 2 + two[None, :]),
                    mask=cmask[:, None], other=0.0).to(tl.float32)
        c_r, c_i = tl.split(c)                        # (BLOCK_D,) carry = state before the tile
    else:
        c_r = tl.zeros([BLOCK_D], dtype=tl.float32)
        c_i = tl.zeros([BLOCK_D], dtype=tl.float32)
    two_c = tl.arange(0, 2)
    if CKPT_EVERY > 0:  # checkpoint 0: the initial state
        tl.store(CKPT + ((pid_b.to(tl.int64) * n_ckpt * D + cols)[:, None] * 2 + two_c[None, :]),
                 tl.join(c_r, c_i), mask=cmask[:, None])
    last = (rows == BLOCK_L - 1)[:, None]
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
        m = 1.0 - p
        cs, sn = _cos_sin(th, FAST_TRIG)
        A_r, A_i, S_r, S_i = tl.associative_scan((m * cs, m * sn, p * u_r, p * u_i), 0, _compose)
        h_r = S_r + A_r * c_r[None, :] - A_i * c_i[None, :]
        h_i = S_i + A_r * c_i[None, :] + A_i * c_r[None, :]
        offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
        _store_pairs(H, offs2, mask2, h_r, h_i, BLOCK_L, BLOCK_D)
        if CKPT_EVERY > 0 and CKPT_EVERY % BLOCK_L != 0:  # rows t + 1 = j·CKPT_EVERY: checkpoint j = h_t
            j = (t + 1) // CKPT_EVERY
            sel = ((t + 1) % CKPT_EVERY == 0) & (j < n_ckpt) & (t < L)
            c2 = pid_d * (2 * BLOCK_D) + tl.arange(0, 2 * BLOCK_D)
            offs_c = ((pid_b.to(tl.int64) * n_ckpt + j) * D)[:, None] * 2 + c2[None, :]
            _store_pairs(CKPT, offs_c, sel[:, None] & (c2 < 2 * D)[None, :], h_r, h_i, BLOCK_L, BLOCK_D)
        c_r = tl.sum(tl.where(last, h_r, 0.0), axis=0)
        c_i = tl.sum(tl.where(last, h_i, 0.0), axis=0)
        if CKPT_EVERY > 0 and CKPT_EVERY % BLOCK_L == 0:  # the carry itself, after every few tiles
            te = (k + 1) * BLOCK_L + tl.zeros([BLOCK_D], dtype=tl.int32)  # rows done, as a tensor
            jc = te // CKPT_EVERY
            sel_c = (te % CKPT_EVERY == 0) & (jc < n_ckpt) & cmask
            tl.store(CKPT + (((pid_b.to(tl.int64) * n_ckpt + jc) * D + cols)[:, None] * 2 + two_c[None, :]),
                     tl.join(c_r, c_i), mask=sel_c[:, None])


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
    two = tl.arange(0, 2)
    jv = j + tl.zeros([BLOCK_D], dtype=tl.int32)  # (BLOCK_D,): a tensor, so its compare is a tensor mask
    c = tl.load(CKPT + (((pid_b.to(tl.int64) * n_tiles + tl.maximum(jv, 0)) * D + cols)[:, None] * 2
                        + two[None, :]), mask=(cmask & (jv >= 0))[:, None], other=0.0)
    c_r, c_i = tl.split(c)
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
    two = tl.arange(0, 2)
    jv = j + tl.zeros([BLOCK_D], dtype=tl.int32)
    c = tl.load(CKPT + (((pid_b.to(tl.int64) * n_tiles + tl.maximum(jv, 0)) * D + cols)[:, None] * 2
                        + two[None, :]), mask=(cmask & (jv >= 0))[:, None], other=0.0)
    c_r, c_i = tl.split(c)
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
        css = ()
        sns = ()
        ars = ()
        ais = ()
        one = tl.full([LANES, BLOCK_D], 1.0, tl.float32)
        Af_r = one
        Af_i = one * 0.0
        Bf_r = one * 0.0
        Bf_i = one * 0.0
        for s in tl.static_range(R):
            m = 1.0 - ps[s]
            cs, sn = _cos_sin(ths[s], False)
            a_r = m * cs
            a_i = m * sn
            css = css + (cs,)
            sns = sns + (sn,)
            ars = ars + (a_r,)
            ais = ais + (a_i,)
            Af_r, Af_i, Bf_r, Bf_i = _compose(Af_r, Af_i, Bf_r, Bf_i, a_r, a_i, ps[s] * urs[s], ps[s] * uis[s])
        # ... and its reverse composition (rows downward): x ↦ conj(a)(dL/dh + x)
        Ar_r = one
        Ar_i = one * 0.0
        Br_r = one * 0.0
        Br_i = one * 0.0
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
    two = tl.arange(0, 2)                             # (re, im)
    if HAS_H0:
        c = tl.load(H0 + ((pid_b.to(tl.int64) * D + cols)[:, None] * 2 + two[None, :]),
                    mask=cmask[:, None], other=0.0).to(tl.float32)
        c_r, c_i = tl.split(c)                        # (BLOCK_D,) carry = state before the tile
    else:
        c_r = tl.zeros([BLOCK_D], dtype=tl.float32)
        c_i = tl.zeros([BLOCK_D], dtype=tl.float32)
    if CKPT_EVERY > 0:  # checkpoint 0: the initial state
        tl.store(CKPT + ((pid_b.to(tl.int64) * n_ckpt * D + cols)[:, None] * 2 + two[None, :]),
                 tl.join(c_r, c_i), mask=cmask[:, None])
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
        ars = ()
        ais = ()
        brs = ()
        bis = ()
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
            b_r = ps[s] * urs[s]
            b_i = ps[s] * uis[s]
            ars = ars + (a_r,)
            ais = ais + (a_i,)
            brs = brs + (b_r,)
            bis = bis + (b_i,)
            A_r, A_i, B_r, B_i = _compose(A_r, A_i, B_r, B_i, a_r, a_i, b_r, b_i)
        # 2. the state entering each thread's first row
        h_r, h_i, _, _ = _shifted_scan(A_r, A_i, B_r, B_i, c_r, c_i, False, 0, LANES)
        # 3. the recurrence over the thread's rows; store h slab by slab
        for s in tl.static_range(R):
            h_r, h_i = _cmul(ars[s], ais[s], h_r, h_i)
            h_r = h_r + brs[s]
            h_i = h_i + bis[s]
            t = j * (LANES * R) + lane_rows + s
            offs2, mask2 = _pair_offsets(t, base, L, D, pid_d, BLOCK_D)
            _store_pairs(H, offs2, mask2, h_r, h_i, LANES, BLOCK_D)
            if CKPT_EVERY > 0 and CKPT_EVERY % (LANES * R) != 0:
                # rows t + 1 = k·CKPT_EVERY: checkpoint k = h_t. If R divides CKPT_EVERY only a
                # thread's last row can be one (lane·R + s + 1 ≡ 0 mod R needs s = R − 1)
                if CKPT_EVERY % R != 0 or s == R - 1:
                    k = (t + 1) // CKPT_EVERY
                    sel = ((t + 1) % CKPT_EVERY == 0) & (k < n_ckpt) & (t < L)
                    c2 = pid_d * (2 * BLOCK_D) + tl.arange(0, 2 * BLOCK_D)
                    offs_c = ((pid_b.to(tl.int64) * n_ckpt + k) * D)[:, None] * 2 + c2[None, :]
                    _store_pairs(CKPT, offs_c, sel[:, None] & (c2 < 2 * D)[None, :], h_r, h_i, LANES, BLOCK_D)
        # the carry: h at the tile's last row (the last lane's last row)
        c_r = tl.sum(tl.where(last_lane, h_r, 0.0), axis=0)
        c_i = tl.sum(tl.where(last_lane, h_i, 0.0), axis=0)
        if CKPT_EVERY > 0 and CKPT_EVERY % (LANES * R) == 0:  # the carry itself, after every few tiles
            te = (j + 1) * (LANES * R) + tl.zeros([BLOCK_D], dtype=tl.int32)  # rows done, as a tensor
            jc = te // CKPT_EVERY
            sel_c = (te % CKPT_EVERY == 0) & (jc < n_ckpt) & cmask
            tl.store(CKPT + (((pid_b.to(tl.int64) * n_ckpt + jc) * D + cols)[:, None] * 2 + two[None, :]),
                     tl.join(c_r, c_i), mask=sel_c[:, None])


def _rows_split(BL: int, BD: int, warps: int) -> tuple[int, int]:
    """``(LANES, R)`` of the rows-per-thread kernels (the ``shift=2`` backward, the ``rows``
    forward): a ``(LANES, BLOCK_D)`` slab gives each of the ``32·num_warps`` threads one element
    (as far as ``BLOCK_L`` allows), ``R = BLOCK_L / LANES`` rows per thread."""
    lanes = max(1, min(BL, (32 * warps) // BD))
    if BL % lanes or lanes & (lanes - 1) or BD & (BD - 1):
        raise ValueError(f"rows per thread (backward shift=2, forward rows=True) needs BLOCK_L ({BL}) to be "
                         f"a multiple of 32·num_warps/BLOCK_D ({lanes}) and powers of two; pick powers of two")
    return lanes, BL // lanes


def _pairs(u: torch.Tensor) -> torch.Tensor:
    """``u`` as a contiguous real ``(..., 2)`` tensor of (re, im) pairs (complex → view_as_real)."""
    if u.is_complex():
        return torch.view_as_real(u.resolve_conj().contiguous())
    return u.contiguous()


def _launch_fwd(p, theta, u2, h02, config, ckpt_every: int = 0):
    """``(h2, ckpt2)``: h as (B, L, D, 2) pairs, and (if ``ckpt_every`` > 0) the states entering
    every chunk of ``ckpt_every`` rows as (B, cdiv(L, ckpt_every), D, 2) pairs, else None."""
    B, L, D = p.shape
    BL, BD, warps, fast, strided, prefetch, stages = (*config, False, False, False, None)[:7]
    rows = len(config) > 7 and bool(config[7])  # the v5 forward: R consecutive rows per thread
    h2 = torch.empty(B, L, D, 2, device=p.device, dtype=torch.float32)
    n_ckpt = triton.cdiv(L, ckpt_every) if ckpt_every else 0
    ck2 = torch.empty(B, n_ckpt, D, 2, device=p.device, dtype=torch.float32) if ckpt_every else None
    grid = (B, triton.cdiv(D, BD))
    if rows:
        lanes, r = _rows_split(BL, BD, warps)
        _fwd_rows_kernel[grid](p, theta, u2, h02 if h02 is not None else h2, h2, ck2 if ck2 is not None else h2,
                               L, D, triton.cdiv(L, BL), n_ckpt,
                               HAS_H0=h02 is not None, LANES=lanes, R=r, BLOCK_D=BD, FAST_TRIG=bool(fast),
                               STRIDED=bool(strided), PREFETCH=bool(prefetch), CKPT_EVERY=ckpt_every,
                               num_warps=warps, **({} if stages is None else {"num_stages": stages}))
        return h2, ck2
    _fwd_kernel[grid](p, theta, u2, h02 if h02 is not None else h2, h2, ck2 if ck2 is not None else h2,
                      L, D, triton.cdiv(L, BL), n_ckpt,
                      HAS_H0=h02 is not None, BLOCK_L=BL, BLOCK_D=BD, FAST_TRIG=fast, STRIDED=strided, PREFETCH=prefetch,
                      CKPT_EVERY=ckpt_every,
                      num_warps=warps, **({} if stages is None else {"num_stages": stages}))
    return h2, ck2


def _launch_bwd(p, theta, u2, h02, h2, g2, config):
    B, L, D = p.shape
    BL, BD, warps, fast, strided, prefetch, stages = (*config, False, False, False, None)[:7]
    dp = torch.empty_like(p)
    dth = torch.empty_like(theta)
    du2 = torch.empty_like(u2)
    dh02 = torch.empty_like(h02) if h02 is not None else None
    grid = (B, triton.cdiv(D, BD))
    _bwd_kernel[grid](p, theta, u2, h02 if h02 is not None else h2, h2, g2, dp, dth, du2,
                      dh02 if dh02 is not None else dp, L, D, triton.cdiv(L, BL),
                      HAS_H0=h02 is not None, BLOCK_L=BL, BLOCK_D=BD, FAST_TRIG=fast, STRIDED=strided, PREFETCH=prefetch,
                      num_warps=warps, **({} if stages is None else {"num_stages": stages}))
    return dp, dth, du2, dh02


def _launch_bwd_recompute(p, theta, u2, h02, ck2, g2, config):
    """The v3 backward from the forward's checkpoints ``ck2`` (taken every ``config[0]`` rows)."""
    B, L, D = p.shape
    BL, BD, warps, shift, prefetch = config
    if ck2.shape[1] != triton.cdiv(L, BL):
        raise ValueError(f"checkpoints every {L / ck2.shape[1]:.0f} rows do not match BLOCK_L = {BL}")
    dp = torch.empty_like(p)
    dth = torch.empty_like(theta)
    du2 = torch.empty_like(u2)
    dh02 = torch.empty_like(h02) if h02 is not None else None
    grid = (B, triton.cdiv(D, BD))
    if int(shift) == 2:  # each thread owns BLOCK_L / LANES consecutive rows (v4)
        lanes, rows = _rows_split(BL, BD, warps)
        _bwd_rows_kernel[grid](p, theta, u2, ck2, g2, dp, dth, du2, dh02 if dh02 is not None else dp,
                               L, D, triton.cdiv(L, BL), HAS_H0=h02 is not None, LANES=lanes, R=rows,
                               BLOCK_D=BD, PREFETCH=bool(prefetch), num_warps=warps)
        return dp, dth, du2, dh02
    _bwd_recompute_kernel[grid](p, theta, u2, ck2, g2, dp, dth, du2, dh02 if dh02 is not None else dp,
                                L, D, triton.cdiv(L, BL), HAS_H0=h02 is not None, BLOCK_L=BL, BLOCK_D=BD,
                                SHIFT=int(shift), PREFETCH=bool(prefetch), num_warps=warps)
    return dp, dth, du2, dh02


class TritonScan(torch.autograd.Function):
    """Autograd wrapper: ``(p, θ, u, h0) -> h``; ``u`` complex64 or real ``(B, L, D, 2)`` pairs."""

    @staticmethod
    def forward(ctx, p, theta, u, h0, fwd_config, bwd_config, backward):
        p, theta = p.contiguous(), theta.contiguous()
        u2 = _pairs(u)
        h02 = None if h0 is None else torch.view_as_real(h0.to(torch.complex64).resolve_conj().contiguous())
        recompute = backward == "recompute" and any(ctx.needs_input_grad[:4])
        h2, ck2 = _launch_fwd(p, theta, u2, h02, fwd_config, bwd_config[0] if recompute else 0)
        # "recompute" saves the checkpoints instead of h: h is freed as soon as the caller drops it
        ctx.save_for_backward(p, theta, u2, h02, ck2 if recompute else h2)
        ctx.u_complex = u.is_complex()
        ctx.bwd_config = bwd_config
        ctx.recompute = recompute
        return torch.view_as_complex(h2)

    @staticmethod
    def backward(ctx, gh):
        p, theta, u2, h02, saved = ctx.saved_tensors
        g2 = torch.view_as_real(gh.to(torch.complex64).resolve_conj().contiguous())
        launch = _launch_bwd_recompute if ctx.recompute else _launch_bwd
        dp, dth, du2, dh02 = launch(p, theta, u2, h02, saved, g2, ctx.bwd_config)
        du = torch.view_as_complex(du2) if ctx.u_complex else du2
        dh0 = torch.view_as_complex(dh02) if dh02 is not None else None
        return dp, dth, du, dh0, None, None, None


def scan_triton(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None = None,
                fwd_config: tuple | None = None, bwd_config: tuple | None = None,
                backward: str | None = None) -> torch.Tensor:
    """The MIPT recurrence on a CUDA device by the fused Triton kernel.

    Args:
        p, theta: real ``(B, L, D)``, float32 or bf16 (float16 works too); read as float32.
        u: complex64 ``(B, L, D)``, or its real ``(B, L, D, 2)`` (re, im) pairs in float32 or bf16
            (the narrow form for bf16 training; its gradient comes back in the same form).
        h0: complex ``(B, D)`` or None.
        fwd_config: ``(BLOCK_L, BLOCK_D, num_warps[, fast_trig, strided, prefetch, num_stages, rows])``;
            ``rows=True``: the rows-per-thread forward (v5, ``num_stages`` None for Triton's default).
        backward: ``"saved_h"`` (the forward saves h, 8 B/element) or ``"recompute"`` (it saves the
            state every BLOCK_L rows and the backward recomputes h); default :data:`BACKWARD`.
        bwd_config: for ``"saved_h"`` as ``fwd_config``; for ``"recompute"``
            ``(BLOCK_L, BLOCK_D, num_warps, shift, prefetch)``. Defaults chosen on an H200
            (notes/kernel.md).

    Returns:
        complex64 ``h`` of shape ``(B, L, D)``; differentiable in ``p``, ``theta``, ``u``, ``h0``.
    """
    if triton is None:
        raise ImportError("the Triton kernel needs the 'triton' package (pip install triton); "
                          "or use mipt_scan(..., method='chunked')")
    if u.is_complex():
        if u.dtype != torch.complex64:
            raise ValueError(f"u must be complex64 for the Triton kernel (float32 state); got {u.dtype}. "
                             f"Use method='chunked' for complex128.")
    elif not (u.dim() == 4 and u.shape[-1] == 2 and u.is_floating_point()):
        raise ValueError(f"u must be complex64 (B, L, D) or real (re, im) pairs (B, L, D, 2); "
                         f"got dtype {u.dtype} and shape {tuple(u.shape)}")
    if tuple(u.shape[:3]) != tuple(p.shape) or p.shape != theta.shape:
        raise ValueError(f"p, theta and u must share (B, L, D); got p {tuple(p.shape)}, "
                         f"theta {tuple(theta.shape)}, u {tuple(u.shape)}")
    if p.is_complex() or theta.is_complex():
        raise ValueError(f"p and theta must be real; got {p.dtype}, {theta.dtype}")
    if p.device.type != "cuda" and not _interpreting():
        raise ValueError(f"the Triton kernel needs a CUDA device; got p on {p.device}. Use method='chunked'.")
    backward = backward or BACKWARD
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}; got {backward!r}")
    if bwd_config is None:
        bwd_config = RECOMPUTE_CONFIG if backward == "recompute" else BWD_CONFIG
    return TritonScan.apply(p, theta, u, h0, fwd_config or DEFAULT_CONFIG, bwd_config, backward)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"
