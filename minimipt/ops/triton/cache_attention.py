"""The fused cache path (method ``"fused"``): eviction times, held sets and attention in Triton.

It computes what :func:`minimipt.ops.eviction.eviction_times` and
:func:`minimipt.ops.reference.cache_attention_dense` define (the mathematics is in
:mod:`minimipt.cache`), in three launches instead of dozens of PyTorch operations:

1. :func:`evict_blocks_triton`: per sequence, one pass over blocks of C positions carrying the ≤ K
   positions held before each block; writes ``e`` ``(B, L)`` and the held sets ``(B, n, K)``
   (``n = ⌈L/C⌉``; :mod:`~minimipt.ops.triton.cache_kernels` says how);
2. the forward: per (block, sequence, head), attention over the held positions and the block
   itself with the null sink; keeps only ``lse`` ``(B, H, L)`` besides its inputs for backward;
3. the backward: recomputes the probabilities from ``lse`` and the output from them (no
   ``(B, L, K)`` tables are kept) and returns gradients for q, k, v *and* log w (the write score
   learns through the cache).

Availability mirrors the scan kernel's (:mod:`minimipt.ops.triton`): the path is used on a CUDA
device where Triton imports and a first-use self-check on that device (eviction times against the
PyTorch form, values and gradients against the dense form in float64) passes; otherwise
:func:`fused_available` is False, a warning says why once, and the cache runs ``"blocked"``.
Importing this module never imports Triton unless it is installed.
"""

from __future__ import annotations

import torch

from . import _checked_once, _mismatch
from ._tl import interpreting, triton

__all__ = ["cache_attention_triton", "evict_blocks_triton", "fused_available", "fused_self_check",
           "fused_supports", "FUSED_MAX_SLOTS", "block_size"]

FUSED_MAX_SLOTS = 128  # BK·C tiles per program: beyond this "blocked" is used
# launch configuration (sm_90, Triton 3.9 for GPUTarget("cuda", 90, 32), docs/cache_kernels.md):
# the eviction kernel at C = BK = 64 takes 207 registers and no spills with 8 warps (255 and spills
# with 4); the forward 255 with 4 warps, the backward 255 and 72 B of stack with 8.
# `python -m minimipt.bench cache --sweep` times the alternatives.
EVICT_WARPS = 8
FWD_WARPS = 4
BWD_WARPS = 8
BLOCK_MAX = 64  # the largest block C
_CHECKED: dict[str, bool] = {}


def block_size(slots: int) -> int:
    """Queries per block C for K slots: K rounded up to a power of two, within [16, :data:`BLOCK_MAX`]."""
    return max(16, min(BLOCK_MAX, _pow2(slots)))


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@torch.no_grad()
def evict_blocks_triton(log_w: torch.Tensor, eligible: torch.Tensor, slots: int,
                        block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(e, held)``: eviction times long ``(B, L)`` (as :func:`~minimipt.ops.eviction.eviction_times`)
    and the positions held just before each block of ``block`` positions, int32 ``(B, n, K)``
    with ``K = min(slots, L)`` and −1 for empty slots (in no particular order)."""
    from .cache_kernels import _evict_kernel

    B, L = log_w.shape
    K = min(int(slots), L)
    C = block or block_size(K)
    n = triton.cdiv(L, C)
    evict = torch.empty(B, L, dtype=torch.long, device=log_w.device)
    held = torch.empty(B, n, K, dtype=torch.int32, device=log_w.device)
    if B == 0:
        return evict, held
    _evict_kernel[(B,)](log_w.detach().float().contiguous(), eligible.contiguous().view(torch.uint8), evict, held,
                        L, n, K, C=C, BK=max(16, _pow2(K)), num_warps=EVICT_WARPS)
    return evict, held


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, L, H, d_h)`` with unit stride in d_h and heads d_h apart (a view where possible)."""
    return x if x.stride(3) == 1 and x.stride(2) == x.shape[3] else x.contiguous()


class FusedCacheAttention(torch.autograd.Function):
    """``(q, k, v, log w; e, held) → o``, differentiable in q, k, v and log w."""

    @staticmethod
    def forward(ctx, q, k, v, log_w, evict, held, block):
        from .cache_kernels import _attn_fwd_kernel

        q, k, v = _rows(q), _rows(k), _rows(v)
        B, L, H, dh = q.shape
        n, K = held.shape[1], held.shape[2]
        lw = log_w.detach().float().contiguous()
        o = torch.empty(B, L, H, dh, dtype=v.dtype, device=q.device)
        lse = torch.empty(B, H, L, dtype=torch.float32, device=q.device)
        meta = dict(C=block, BK=max(16, _pow2(K)), BD=max(16, _pow2(dh)), IEEE=q.dtype == torch.float32)
        _attn_fwd_kernel[(n, B * H)](q, k, v, lw, evict, held, o, lse,
                                     q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                                     o.stride(0), o.stride(1), L, H, K, n, dh, dh ** -0.5, num_warps=FWD_WARPS, **meta)
        ctx.save_for_backward(q, k, v, lw, evict, held, lse)  # o is recomputed in the backward
        ctx.meta, ctx.lw_dtype = meta, log_w.dtype
        return o

    @staticmethod
    def backward(ctx, do):
        from .cache_kernels import _attn_bwd_kernel

        q, k, v, lw, evict, held, lse = ctx.saved_tensors
        B, L, H, dh = q.shape
        n, K = held.shape[1], held.shape[2]
        do = _rows(do.to(v.dtype))
        dq = torch.empty(B, L, H, dh, dtype=q.dtype, device=q.device)
        dk = torch.zeros(B, L, H, dh, dtype=torch.float32, device=q.device)
        dv = torch.zeros(B, L, H, dh, dtype=torch.float32, device=q.device)
        dlw = torch.zeros(B, L, dtype=torch.float32, device=q.device)
        _attn_bwd_kernel[(n, B * H)](q, k, v, lw, evict, held, do, lse, dq, dk, dv, dlw,
                                     q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                                     do.stride(0), do.stride(1),
                                     L, H, K, n, dh, dh ** -0.5, num_warps=BWD_WARPS, **ctx.meta)
        return dq, dk.to(k.dtype), dv.to(v.dtype), dlw.to(ctx.lw_dtype), None, None, None


def fused_supports(dtype: torch.dtype, length: int, slots: int | None) -> bool:
    """Whether the kernels take these inputs: q, k, v of ``dtype`` float32, bf16 or float16, and
    finite ``slots`` with ``min(slots, length) ≤`` :data:`FUSED_MAX_SLOTS`."""
    return (slots is not None and min(slots, length) <= FUSED_MAX_SLOTS
            and dtype in (torch.float32, torch.bfloat16, torch.float16))


def cache_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor,
                           eligible: torch.Tensor, slots: int, block: int | None = None):
    """``(e, o)``: the eviction times ``(B, L)`` and the cache's attention output ``(B, L, H, d_h)``.

    ``q, k, v``: ``(B, L, H, d_h)`` float32, bf16 or float16 (one dtype) on a CUDA device;
    ``log_w``: ``(B, L)`` write scores; ``eligible``: bool ``(B, L)``; ``slots``: K ≥ 1 with
    ``min(K, L) ≤`` :data:`FUSED_MAX_SLOTS`; ``block``: queries per block (default
    :func:`block_size`, a power of two ≥ 16). Equal to ``eviction_times`` followed by
    ``cache_attention_dense`` (values and gradients; tests compare them).
    """
    if triton is None:
        raise ImportError("the fused cache path needs the 'triton' package (pip install triton); "
                          "or use CausalSparseCache(method='blocked')")
    if slots is None or isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ValueError(f"slots must be an int >= 1 for the fused cache path; got {slots!r}")
    if q.dim() != 4 or not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k and v must share the shape (B, L, H, d_h); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    B, L, H, dh = q.shape
    if tuple(log_w.shape) != (B, L) or tuple(eligible.shape) != (B, L):
        raise ValueError(f"log_w and eligible must have shape (B, L) = {(B, L)}; got {tuple(log_w.shape)}, "
                         f"{tuple(eligible.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not fused_supports(q.dtype, L, slots):
        raise ValueError(f"the fused cache path takes q, k, v of one dtype among float32, bf16, float16 and "
                         f"min(slots, L) <= {FUSED_MAX_SLOTS}; got {q.dtype}, {k.dtype}, {v.dtype} and slots={slots}")
    if q.device.type != "cuda" and not interpreting():
        raise ValueError(f"the fused cache path needs a CUDA device; got q on {q.device}. Use method='blocked'.")
    if block is not None and (block < 16 or block & (block - 1)):
        raise ValueError(f"block must be a power of two >= 16; got {block}")
    C = block or block_size(min(slots, L))
    evict, held = evict_blocks_triton(log_w, eligible, slots, C)
    return evict, FusedCacheAttention.apply(q, k, v, log_w, evict, held, C)


def fused_self_check(device: torch.device) -> tuple[bool, str]:
    """Run the fused path on ``device`` on a small problem (evictions inside and across blocks, ties,
    a length that is not a multiple of the block, K not a power of two) and compare: eviction
    times equal :func:`~minimipt.ops.eviction.eviction_times`; values and gradients within
    1e-4 (relative) of the dense form in float64. Returns ``(ok, message)``; never raises."""
    from ..eviction import eviction_times
    from ..reference import cache_attention_dense

    if triton is None:
        return False, "Triton could not be imported"
    try:
        # inference_mode(False): a first use under torch.inference_mode() must not fail the check
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            gen = torch.Generator(device="cpu").manual_seed(0)
            B, L, H, dh, K = 2, 77, 2, 8, 5
            q, k, v = (torch.randn(B, L, H, dh, generator=gen, dtype=torch.float64) for _ in range(3))
            log_w = torch.randn(B, L, generator=gen, dtype=torch.float64).div(2).round(decimals=1) - 1  # ties
            eligible = torch.rand(B, L, generator=gen) > 0.2
            g = torch.randn(B, L, H, dh, generator=gen, dtype=torch.float64).to(device)
            ref_in = [x.to(device).requires_grad_() for x in (q, k, v, log_w)]
            ours_in = [x.detach().float().requires_grad_() for x in ref_in]
            eligible = eligible.to(device)
            e_ref = eviction_times(ref_in[3].detach(), eligible, K)
            e, out = cache_attention_triton(*ours_in[:3], ours_in[3], eligible, K, block=16)
            if not torch.equal(e, e_ref):
                return False, "self-check mismatch in the eviction times"
            ref = cache_attention_dense(*ref_in, e_ref, K)
            grads_ref = torch.autograd.grad(ref, ref_in, g)
            grads = torch.autograd.grad(out, ours_in, g.float())
            bad = _mismatch(("o", "dq", "dk", "dv", "dlog_w"), (out, *grads), (ref, *grads_ref))
            if bad:
                return False, bad
    except Exception as err:  # a compile or launch failure
        return False, f"the fused cache kernels failed on {device} ({type(err).__name__}: {err})"
    return True, "ok"


def fused_available(device: torch.device) -> bool:
    """Whether the fused cache path runs correctly on ``device`` (a CUDA device, checked once)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return _checked_once(_CHECKED, device, fused_self_check, "the fused cache path is disabled",
                         "the cache uses method 'blocked' instead")
