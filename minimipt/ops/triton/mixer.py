"""The fused mixer: the MIPT layer's gate, recurrence and ``Re h`` readout in one Triton kernel,
read straight from the in-projection output.

For ``proj`` of shape ``(B, L, 4D)`` laid out ``[z | θ | u_re | u_im]`` along the last dim
(``MIPTLayer.in_proj``'s output with ``phase="input"``; bf16 under autocast):

    p_t = σ(z_t)                                    (float32, inside the kernel)
    h_t = (1 − p_t) e^{iθ_t} h_{t−1} + p_t u_t,      u_t = u_re,t + i u_im,t,   h_{−1} = h0 or 0
    y_t = Re h_t                                     (B, L, D) float32

Backward, from a real ``dL/dy`` (``dL/dh_t = dL/dy_t + 0i``) with the equations of
:mod:`minimipt.ops.triton.scan` (h recomputed from checkpoints), returns ``dL/dproj`` ``(B, L, 4D)`` in
``proj``'s dtype: ``∂L/∂z = ∂L/∂p · p (1 − p)``, ``∂L/∂θ``, ``∂L/∂u_re``, ``∂L/∂u_im``, and ``∂L/∂h0``.

What autograd keeps: ``proj`` itself (8 B per channel in bf16) and the state entering every
``backward.block_l`` rows (float32 pairs), instead of p (4), θ (2), u (4) and the checkpoints of the
split path; and the gradient arriving from the readout is real (4 B) instead of complex (8 B).
Bytes per channel and token with a bf16 ``proj``: the forward reads 8 and writes ``y`` (4) plus
8/block_l of checkpoints; the backward reads ``proj`` (8), ``dL/dy`` (4) and the checkpoints and writes
``dL/dproj`` (8).

:func:`mixer_reference` is the slow, obviously-correct twin (split, ``torch.sigmoid``,
:func:`~minimipt.ops.reference.scan_sequential`, ``.real``). The kernels are in ``_tl_mixer``.
"""

from __future__ import annotations

import torch

from ..reference import scan_sequential
from ._tl import interpreting, triton
from ._tl_mixer import _mixer_bwd_kernel, _mixer_fwd_kernel
from .scan import BackwardConfig, ForwardConfig, _resolve_configs

__all__ = ["mixer_triton", "mixer_reference", "TritonMixer", "MIXER_FORWARD", "MIXER_BACKWARD"]

# The scan's tree-scan kernels' fastest tilings on an H200 (results/bench/scan_sweep_h200.json: forward
# and recomputing backward at (32, 512, 8192)); the mixer's own kernels were not swept (docs/kernels.md)
MIXER_FORWARD = ForwardConfig(block_l=16, block_d=16, num_warps=1, prefetch=True)
MIXER_BACKWARD = BackwardConfig(block_l=16, block_d=8, num_warps=1, prefetch=False)


def _check_proj(proj: torch.Tensor, h0: torch.Tensor | None) -> int:
    """``D`` of a valid ``proj`` (B, L, 4D) and ``h0`` (B, D) complex or None; else ValueError."""
    if not isinstance(proj, torch.Tensor) or proj.dim() != 3:
        got = tuple(proj.shape) if isinstance(proj, torch.Tensor) else type(proj).__name__
        raise ValueError(f"proj must be the in-projection output of shape (B, L, 4D) = [z | θ | u_re | u_im]; "
                         f"got {got}")
    if not proj.is_floating_point():
        raise ValueError(f"proj must be a real floating tensor (bf16, fp16, float32); got dtype {proj.dtype}")
    B, L, n = proj.shape
    if n == 0 or n % 4:
        raise ValueError(f"proj's last dim must be 4D (z, θ, u_re, u_im of D channels each), a positive "
                         f"multiple of 4; got {n}. A phase='static' layer has 3D: use the split path")
    if L == 0:
        raise ValueError(f"proj's sequence is empty: shape {tuple(proj.shape)}")
    D = n // 4
    if h0 is not None and (not isinstance(h0, torch.Tensor) or not h0.is_complex()
                           or tuple(h0.shape) != (B, D)):
        got = (h0.dtype, tuple(h0.shape)) if isinstance(h0, torch.Tensor) else type(h0).__name__
        raise ValueError(f"h0 must be None or a complex tensor of shape (B, D) = {(B, D)}; got {got}")
    return D


def mixer_reference(proj: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """The slow twin of :func:`mixer_triton`: ``Re h`` (B, L, D) of the recurrence of the module
    docstring by split, ``torch.sigmoid``, :func:`~minimipt.ops.reference.scan_sequential` and ``.real``.

    float32 (bf16/fp16 ``proj`` widened to float32), or float64 for a float64 ``proj``."""
    D = _check_proj(proj, h0)
    wide = proj if proj.dtype in (torch.float32, torch.float64) else proj.float()
    z, theta, u_re, u_im = wide.split(D, dim=-1)  # (B, L, D) each
    p = torch.sigmoid(z)
    h = scan_sequential(p, theta, torch.complex(u_re, u_im), None if h0 is None else h0.to(
        torch.complex128 if wide.dtype == torch.float64 else torch.complex64))
    return h.real  # (B, L, D)


def _launch_fwd(x, h02, cfg: ForwardConfig, ckpt_every: int):
    """``(y, ckpt2)``: y (B, L, D) float32 and, if ``ckpt_every`` > 0, the states entering every
    ``ckpt_every`` rows as (B, cdiv(L, ckpt_every), D, 2) float32 pairs (else None)."""
    B, L, D4 = x.shape
    D = D4 // 4
    y = torch.empty(B, L, D, device=x.device, dtype=torch.float32)
    n_ckpt = triton.cdiv(L, ckpt_every) if ckpt_every else 0
    ck2 = torch.empty(B, n_ckpt, D, 2, device=x.device, dtype=torch.float32) if ckpt_every else None
    _mixer_fwd_kernel[(B, triton.cdiv(D, cfg.block_d))](
        x, h02 if h02 is not None else y, y, ck2 if ck2 is not None else y, L, D, triton.cdiv(L, cfg.block_l),
        n_ckpt, HAS_H0=h02 is not None, BLOCK_L=cfg.block_l, BLOCK_D=cfg.block_d, PREFETCH=cfg.prefetch,
        CKPT_EVERY=ckpt_every, num_warps=cfg.num_warps)
    return y, ck2


def _launch_bwd(x, has_h0: bool, ck2, gy, cfg: BackwardConfig):
    """``(dx, dh02)``: dL/dproj (B, L, 4D) in ``x``'s dtype and dL/dh0 (B, D, 2) float32 (or None), from the
    forward's checkpoints ``ck2`` (taken every ``cfg.block_l`` rows)."""
    B, L, D4 = x.shape
    D = D4 // 4
    dx = torch.empty_like(x)
    dh02 = torch.empty(B, D, 2, device=x.device, dtype=torch.float32) if has_h0 else None
    _mixer_bwd_kernel[(B, triton.cdiv(D, cfg.block_d))](
        x, ck2, gy, dx, dh02 if dh02 is not None else ck2, L, D, triton.cdiv(L, cfg.block_l),
        HAS_H0=has_h0, BLOCK_L=cfg.block_l, BLOCK_D=cfg.block_d, PREFETCH=cfg.prefetch, num_warps=cfg.num_warps)
    return dx, dh02


class TritonMixer(torch.autograd.Function):
    """Autograd wrapper: ``(proj (B, L, 4D), h0 (B, D) complex or None) -> y = Re h (B, L, D)``.
    Saves ``proj`` and the checkpoints; the backward takes a real ``dL/dy``."""

    @staticmethod
    def forward(ctx, proj, h0, forward: ForwardConfig, backward: BackwardConfig):
        x = proj.contiguous()
        h02 = None if h0 is None else torch.view_as_real(h0.to(torch.complex64).resolve_conj().contiguous())
        needs_grad = any(ctx.needs_input_grad[:2])
        y, ck2 = _launch_fwd(x, h02, forward, backward.block_l if needs_grad else 0)
        ctx.save_for_backward(x, ck2)
        ctx.h0_dtype = None if h0 is None else h0.dtype
        ctx.backward_config = backward
        return y

    @staticmethod
    def backward(ctx, gy):
        x, ck2 = ctx.saved_tensors
        dx, dh02 = _launch_bwd(x, ctx.h0_dtype is not None, ck2, gy.contiguous(), ctx.backward_config)
        dh0 = None if dh02 is None else torch.view_as_complex(dh02).to(ctx.h0_dtype)
        return dx, dh0, None, None


def mixer_triton(proj: torch.Tensor, h0: torch.Tensor | None = None, *, forward: ForwardConfig | None = None,
                 backward: BackwardConfig | None = None) -> torch.Tensor:
    """``y = Re h`` (B, L, D) float32 of the recurrence of the module docstring, by the fused kernels.

    Args:
        proj: ``(B, L, 4D)`` = ``[z | θ | u_re | u_im]``, bf16, fp16 or float32 (read as float32);
            its gradient comes back in the same dtype.
        h0: complex ``(B, D)`` state before the first token (float32 inside), or None (zeros).
        forward, backward: the kernels' launch configurations; default :data:`MIXER_FORWARD`,
            :data:`MIXER_BACKWARD`.

    On a CUDA device (or on the CPU under ``TRITON_INTERPRET=1``); differentiable in ``proj``, ``h0``.
    """
    if triton is None:
        raise ImportError("the fused mixer needs the 'triton' package (pip install triton); "
                          "or use MIPTLayer(fused_mixer=False)")
    _check_proj(proj, h0)
    forward, backward = _resolve_configs(forward, backward, MIXER_FORWARD, MIXER_BACKWARD)
    if proj.device.type != "cuda" and not interpreting():
        raise ValueError(f"the fused mixer needs a CUDA device; got proj on {proj.device}. "
                         f"Use mixer_reference or MIPTLayer(fused_mixer=False).")
    if proj.dtype == torch.float64:
        raise ValueError("proj must be bf16, fp16 or float32 for the fused mixer (float32 state); got float64. "
                         "Use mixer_reference for float64.")
    return TritonMixer.apply(proj, h0, forward, backward)
