"""A fused Triton kernel for the MIPT recurrence (forward and backward), method ``"triton"``.

It computes exactly what :func:`minimipt.ops.reference.scan_sequential` defines,

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

This module holds the configurations, the launches, the autograd function and :func:`scan_triton`;
the kernels are in ``_tl_forward`` and ``_tl_backward``, the device functions they share in ``_tl``.
:mod:`minimipt.ops.triton` imports this module (and so Triton) only on first use on a CUDA device;
without Triton the module still imports, and :func:`scan_triton` raises ``ImportError``.
"""

from __future__ import annotations

import os

import torch

from ._tl import triton
from ._tl_backward import _bwd_kernel, _bwd_recompute_kernel, _bwd_rows_kernel
from ._tl_forward import _fwd_kernel, _fwd_rows_kernel

__all__ = ["scan_triton", "TritonScan", "DEFAULT_CONFIG", "BWD_CONFIG", "RECOMPUTE_CONFIG", "BACKWARD",
           "BACKWARDS"]

# (BLOCK_L, BLOCK_D, num_warps, fast_trig, strided, prefetch[, num_stages[, rows]]): the forward and
# backward kernels' launch configurations, chosen by the sweep of minimipt.bench (notes/kernel.md).
# rows (forward only; default False): True runs _fwd_rows_kernel (v5), each thread owning
# BLOCK_L·BLOCK_D/(32·num_warps) consecutive rows; give num_stages (None: Triton's default) before it
# (16, 16, 1, False, False, True, None, True), the rows-per-thread forward (v5), was the fastest of the
# H200 sweep of session 4 (results/bench/scan_h200.json) and the best end to end with the backward below
DEFAULT_CONFIG = (16, 16, 1, False, False, True, None, True)
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
# (16, 16, 2, 2, False) was the fastest of the H200 sweep of session 3: backward 1.98 ms at
# (32, 512, 8192) (v3's (16, 8, 1, 0, False): 2.47 ms in the same run). Its neighbour (16, 32, 4, 2,
# True) won the sweep of session 4 (results/bench/scan_h200.json): forward+backward through autograd
# 2.46 ms with the v5 forward vs 2.93 ms for the session-3 defaults in the same run
RECOMPUTE_CONFIG = (16, 32, 4, 2, True)

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
