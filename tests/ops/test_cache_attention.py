"""The cache's batched attention forms (minimipt.ops.cache_attention): the slot and blocked paths
equal the dense form in values and gradients (float64); "fused" falls back to "blocked" off CUDA.
The fused Triton kernels themselves: triton/test_cache_attention.py."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from minimipt.cache import CausalSparseCache
from minimipt.ops.cache_attention import cache_attention_blocked, cache_attention_slots, fused_usable
from minimipt.ops.eviction import eviction_times
from minimipt.ops.reference import cache_attention_dense, eligible_mask


@pytest.mark.parametrize("slots", [1, 3, 6, None])
def test_dense_slot_and_blocked_paths_agree_values_and_gradients(slots):
    gen = torch.Generator().manual_seed(11)
    B, L, H, dh = 2, 10, 2, 4
    q, k, v = (torch.randn(B, L, H, dh, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    log_w = (torch.randn(B, L, generator=gen, dtype=torch.float64) - 1).requires_grad_()
    e = eviction_times(log_w.detach(), torch.rand(B, L, generator=gen) > 0.2, slots)
    ref = cache_attention_dense(q, k, v, log_w, e, slots)
    if slots is None:
        for fn in (cache_attention_slots, cache_attention_blocked):
            with pytest.raises(ValueError, match="finite"):
                fn(q, k, v, log_w, e, slots)
        return
    # slots: 1024 = one piece, 3 = the chunked, recomputed path; blocked: blocks of 16 (one, padded),
    # 3 and 4 (L = 10 not a multiple: padding), 1 (every query its own block)
    for fn, chunk in ((cache_attention_slots, 1024), (cache_attention_slots, 3), (cache_attention_blocked, None),
                      (cache_attention_blocked, 3), (cache_attention_blocked, 4), (cache_attention_blocked, 1)):
        out = fn(q, k, v, log_w, e, slots, chunk=chunk)
        torch.testing.assert_close(out, ref)
        g = torch.randn_like(ref)
        g_ref = torch.autograd.grad(ref, (q, k, v, log_w), g, retain_graph=True)
        g_out = torch.autograd.grad(out, (q, k, v, log_w), g)
        for a, b in zip(g_out, g_ref):
            torch.testing.assert_close(a, b)


def test_blocked_path_over_many_blocks_with_evictions():
    """Many blocks, entries evicted inside blocks and held across several, a threshold: values and
    gradients of the blocked path equal the dense reference's (float64)."""
    gen = torch.Generator().manual_seed(3)
    B, L, H, dh, K = 2, 150, 2, 4, 5
    q, k, v = (torch.randn(B, L, H, dh, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    log_w = (torch.randn(B, L, generator=gen, dtype=torch.float64) - 1).requires_grad_()
    e = eviction_times(log_w.detach(), eligible_mask(log_w.detach(), 0.2), K)
    pos = torch.arange(L)
    assert ((e > pos) & (e < L)).any() and ((e - pos) > 16).any()  # evicted ones; held across blocks
    ref = cache_attention_dense(q, k, v, log_w, e, K)
    out = cache_attention_blocked(q, k, v, log_w, e, K)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (q, k, v, log_w), g), torch.autograd.grad(ref, (q, k, v, log_w), g)):
        torch.testing.assert_close(a, b)


def test_fused_falls_back_to_blocked_off_cuda_with_one_warning():
    torch.manual_seed(0)
    blocked = CausalSparseCache(16, 3, heads=2, method="blocked").double()
    fused = CausalSparseCache(16, 3, heads=2, method="fused").double()
    fused.load_state_dict(blocked.state_dict())
    xh = torch.randn(2, 40, 16, dtype=torch.float64)
    log_p = F.logsigmoid(torch.randn(2, 40, 8, dtype=torch.float64))
    import minimipt.ops.cache_attention as ca

    ca._WARNED.discard("cpu")
    with pytest.warns(RuntimeWarning, match="'fused' needs a CUDA device"):
        out = fused(xh, log_p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per device
        fused(xh, log_p)
    assert torch.equal(out, blocked(xh, log_p))
    assert not fused_usable("cpu", torch.float32, 40, 3)
