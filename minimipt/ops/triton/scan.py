"""The MIPT recurrence by two fused Triton kernels (method ``"triton"``): configurations, launches, autograd.

It computes exactly what :func:`minimipt.ops.reference.scan_sequential` defines,

    h_t = a_t h_{t-1} + b_t,     a_t = (1 - p_t) e^{iθ_t},   b_t = p_t u_t,     h_{-1} = h0 (or 0),

but reads ``p``, ``θ`` and ``u`` directly and forms ``a`` and ``b`` in registers, so neither is ever
written to memory. The state is float32 whatever the input dtype (float32 or bf16). ``|a| ≤ 1``: the
products of gates only shrink, nothing overflows or divides, at any length.

Shapes: ``B`` batch, ``L`` sequence length, ``D`` channels (complex state entries).

Tiling. Our layout is ``(B, L, D)`` with ``D`` contiguous. One program owns one batch row and
``block_d`` neighbouring channels and walks the sequence in tiles of ``block_l`` rows; each of its
``32·num_warps`` threads owns ``R`` consecutive rows of one channel, ``LANES = 32·num_warps / block_d``
threads per column, ``R = block_l / LANES`` (:mod:`._tl_scan` for the three steps per tile).

Backward (PyTorch's convention ``grad = ∂L/∂Re + i ∂L/∂Im``; ``g_t`` the total gradient at ``h_t``).
The forward keeps only the state entering every ``backward.block_l`` rows (the checkpoints); the
backward walks tiles from the end, recomputes ``h_{t−1}`` from the tile's checkpoint, and runs

    k_t = conj(a_t)(gout_t + k_{t+1}),  k_L = 0      (k_t = ∂L/∂h_{t−1});    g_t = gout_t + k_{t+1}
    r_t = e^{iθ_t} h_{t−1}
    ∂L/∂p_t = Re(conj(g_t)(u_t − r_t)),   ∂L/∂θ_t = −(1 − p_t) Im(r_t conj(g_t)),   ∂L/∂u_t = p_t g_t
    ∂L/∂h0  = k_0

Bytes per complex element, float32 inputs: the forward reads p, θ (4 + 4) and u (8) and writes h (8):
24, plus 8/block_l of checkpoints when a backward follows; the backward reads gout (8), p, θ, u (16) and
the checkpoints (8/block_l) and writes dp, dθ, du (16): 40 + 8/block_l. ``h`` is neither read by the
backward nor kept for it. bf16 ``p``, ``θ`` and ``u`` pairs: 16 and 24 + 8/block_l.

:mod:`minimipt.ops.triton` imports this module (and so Triton) only on first use on a Triton device
(CUDA, or the CPU under ``TRITON_INTERPRET=1``); without Triton the module still imports, and
:func:`scan_triton` raises ``ImportError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._tl import interpreting, triton
from ._tl_scan import _scan_bwd_kernel, _scan_fwd_kernel

__all__ = ["scan_triton", "TritonScan", "ForwardConfig", "BackwardConfig", "DEFAULT_FORWARD", "DEFAULT_BACKWARD"]


@dataclass(frozen=True)
class _Tiling:
    """A kernel launch's tiling; ``block_l``, ``block_d`` and ``num_warps`` are powers of two (Triton's
    tile shapes)."""

    block_l: int
    block_d: int
    num_warps: int
    prefetch: bool

    def __post_init__(self):
        for name in ("block_l", "block_d", "num_warps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v & (v - 1):
                raise ValueError(f"{type(self).__name__}.{name} must be a power of two (Triton's tile shapes); "
                                 f"got {v!r}")
        if not isinstance(self.prefetch, bool):
            raise ValueError(f"{type(self).__name__}.prefetch must be True or False; got {self.prefetch!r}")


class ForwardConfig(_Tiling):
    """A forward kernel's launch: tiles of ``block_l`` rows × ``block_d`` channels, ``num_warps`` warps per
    program; ``prefetch``: issue the next tile's loads before this tile's arithmetic."""


class BackwardConfig(_Tiling):
    """A backward kernel's launch, as :class:`ForwardConfig`; ``block_l`` is also the interval at which
    the forward checkpoints the state (one checkpoint per backward tile)."""


# The fastest pair through autograd at (B, D, L) = (32, 512, 8192), float32, on an H200
# (results/bench/scan_h200.json; docs/kernels.md says why)
DEFAULT_FORWARD = ForwardConfig(block_l=16, block_d=16, num_warps=1, prefetch=True)
DEFAULT_BACKWARD = BackwardConfig(block_l=16, block_d=32, num_warps=4, prefetch=True)


def _lanes_rows(cfg: _Tiling) -> tuple[int, int]:
    """``(LANES, R)``: threads per column of a tile (as far as ``block_l`` allows) and rows per thread."""
    lanes = max(1, min(cfg.block_l, (32 * cfg.num_warps) // cfg.block_d))
    return lanes, cfg.block_l // lanes


def _pairs(u: torch.Tensor) -> torch.Tensor:
    """``u`` as a contiguous real ``(..., 2)`` tensor of (re, im) pairs (complex → view_as_real)."""
    if u.is_complex():
        return torch.view_as_real(u.resolve_conj().contiguous())
    return u.contiguous()


def _launch_fwd(p, theta, u2, h02, cfg: ForwardConfig, ckpt_every: int = 0, bad: torch.Tensor | None = None):
    """``(h2, ckpt2)``: h as (B, L, D, 2) float32 pairs, and (if ``ckpt_every`` > 0) the states entering
    every ``ckpt_every`` rows as (B, cdiv(L, ckpt_every), D, 2) pairs, else None. ``bad`` (int32, one
    element) is set to 1 when an input value is invalid (see the kernel)."""
    B, L, D = p.shape
    lanes, rows = _lanes_rows(cfg)
    h2 = torch.empty(B, L, D, 2, device=p.device, dtype=torch.float32)
    n_ckpt = triton.cdiv(L, ckpt_every) if ckpt_every else 0
    ck2 = torch.empty(B, n_ckpt, D, 2, device=p.device, dtype=torch.float32) if ckpt_every else None
    _scan_fwd_kernel[(B, triton.cdiv(D, cfg.block_d))](
        p, theta, u2, h02 if h02 is not None else h2, h2, ck2 if ck2 is not None else h2,
        bad if bad is not None else h2, L, D, triton.cdiv(L, cfg.block_l), n_ckpt,
        HAS_H0=h02 is not None, LANES=lanes, R=rows, BLOCK_D=cfg.block_d, PREFETCH=cfg.prefetch,
        CKPT_EVERY=ckpt_every, CHECK=bad is not None, num_warps=cfg.num_warps)
    return h2, ck2


def _launch_bwd(p, theta, u2, has_h0: bool, ck2, g2, cfg: BackwardConfig):
    """``(dp, dθ, du2, dh02)`` from the forward's checkpoints ``ck2`` (taken every ``cfg.block_l`` rows)."""
    B, L, D = p.shape
    lanes, rows = _lanes_rows(cfg)
    dp = torch.empty_like(p)
    dth = torch.empty_like(theta)
    du2 = torch.empty_like(u2)
    dh02 = torch.empty(B, D, 2, device=p.device, dtype=torch.float32) if has_h0 else None
    _scan_bwd_kernel[(B, triton.cdiv(D, cfg.block_d))](
        p, theta, u2, ck2, g2, dp, dth, du2, dh02 if dh02 is not None else dp, L, D, triton.cdiv(L, cfg.block_l),
        HAS_H0=has_h0, LANES=lanes, R=rows, BLOCK_D=cfg.block_d, PREFETCH=cfg.prefetch, num_warps=cfg.num_warps)
    return dp, dth, du2, dh02


class TritonScan(torch.autograd.Function):
    """Autograd wrapper: ``(p, θ, u, h0) -> h``; ``u`` complex64 or real ``(B, L, D, 2)`` pairs. Saves
    p, θ, u and the checkpoints (not h)."""

    @staticmethod
    def forward(ctx, p, theta, u, h0, forward: ForwardConfig, backward: BackwardConfig, bad):
        p, theta = p.contiguous(), theta.contiguous()
        u2 = _pairs(u)
        h02 = None if h0 is None else torch.view_as_real(h0.to(torch.complex64).resolve_conj().contiguous())
        needs_grad = any(ctx.needs_input_grad[:4])
        h2, ck2 = _launch_fwd(p, theta, u2, h02, forward, backward.block_l if needs_grad else 0, bad)
        ctx.save_for_backward(p, theta, u2, ck2)
        ctx.u_complex = u.is_complex()
        ctx.h0_dtype = None if h0 is None else h0.dtype
        ctx.backward_config = backward
        return torch.view_as_complex(h2)

    @staticmethod
    def backward(ctx, gh):
        p, theta, u2, ck2 = ctx.saved_tensors
        g2 = torch.view_as_real(gh.to(torch.complex64).resolve_conj().contiguous())
        dp, dth, du2, dh02 = _launch_bwd(p, theta, u2, ctx.h0_dtype is not None, ck2, g2, ctx.backward_config)
        du = torch.view_as_complex(du2) if ctx.u_complex else du2
        dh0 = None if dh02 is None else torch.view_as_complex(dh02).to(ctx.h0_dtype)
        return dp, dth, du, dh0, None, None, None


def _resolve_configs(forward, backward, default_forward: ForwardConfig,
                     default_backward: BackwardConfig) -> tuple[ForwardConfig, BackwardConfig]:
    """``(forward, backward)`` with None replaced by the defaults; ValueError for anything else that is
    not a :class:`ForwardConfig` / :class:`BackwardConfig`."""
    forward = default_forward if forward is None else forward
    backward = default_backward if backward is None else backward
    if not isinstance(forward, ForwardConfig):
        raise ValueError(f"forward must be a ForwardConfig, e.g. {default_forward}; got {forward!r}")
    if not isinstance(backward, BackwardConfig):
        raise ValueError(f"backward must be a BackwardConfig, e.g. {default_backward}; got {backward!r}")
    return forward, backward


def scan_triton(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None = None, *,
                forward: ForwardConfig | None = None, backward: BackwardConfig | None = None,
                bad: torch.Tensor | None = None) -> torch.Tensor:
    """The MIPT recurrence on a CUDA device (or on the CPU under ``TRITON_INTERPRET=1``) by the fused kernels.

    Args:
        p, theta: real ``(B, L, D)``, float32 or bf16 (float16 works too); read as float32.
        u: complex64 ``(B, L, D)``, or its real ``(B, L, D, 2)`` (re, im) pairs in float32 or bf16
            (the narrow form for bf16 training; its gradient comes back in the same form).
        h0: complex ``(B, D)`` or None.
        forward, backward: the kernels' launch configurations; default :data:`DEFAULT_FORWARD`,
            :data:`DEFAULT_BACKWARD`.
        bad: an int32 tensor of one element on p's device, or None: the forward kernel sets it to 1 if
            any p lies outside [0, 1] or any input is NaN or ±inf in float32, from the values it reads
            anyway (no extra pass; :func:`minimipt.mipt_scan` reads it to raise its ``ValueError``).

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
    forward, backward = _resolve_configs(forward, backward, DEFAULT_FORWARD, DEFAULT_BACKWARD)
    if p.device.type != "cuda" and not interpreting():
        raise ValueError(f"the Triton kernel needs a CUDA device; got p on {p.device}. Use method='chunked'.")
    return TritonScan.apply(p, theta, u, h0, forward, backward, bad)
