"""The fused cache kernels (minimipt.ops.triton.cache_attention, method "fused") against their slow
twins: the eviction times of ``eviction_times`` and the values and gradients of
``cache_attention_dense`` (float64).

CPU: the kernel entry's input checks; where Triton is installed, the kernels under Triton's
interpreter (``TRITON_INTERPRET=1``, in a subprocess: the flag must be set before the kernels are
compiled). The dispatch and the fallback to "blocked" off CUDA: tests/ops/test_cache_attention.py.
GPU tests are marked ``gpu`` (``pytest -m gpu tests/ops/triton/test_cache_attention.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from minimipt.cache import CausalSparseCache
from minimipt.ops.cache_attention import evict_and_attend, fused_usable
from minimipt.ops.eviction import eviction_times
from minimipt.ops.reference import cache_attention_dense
from tests._support import DEV, ROOT, cache_problem, has_triton, needs_gpu, rel


def fused_against_dense(B, L, H, dh, K, threshold=0.0, ties=False, seed=0, block=None, dtype=torch.float32,
                        device="cpu"):
    """Relative errors of the fused path's output and gradients (q, k, v, log w) against the dense
    form in float64 on the same (rounded) inputs, and whether the eviction times are equal."""
    from minimipt.ops.triton.cache_attention import cache_attention_triton

    q, k, v, log_w, eligible, gout = cache_problem(B, L, H, dh, threshold, ties, seed, device)
    narrow = [x.to(dtype) for x in (q, k, v)] + [log_w.float()]
    ref_in = [x.detach().double().requires_grad_() for x in narrow]
    ours = [x.detach().requires_grad_() for x in narrow]
    e_ref = eviction_times(log_w.float(), eligible, K)
    ref = cache_attention_dense(*ref_in, e_ref, K)
    e, out = cache_attention_triton(*ours, eligible, K, block=block)
    g_ref = torch.autograd.grad(ref, ref_in, gout)
    g = torch.autograd.grad(out, ours, gout.to(out.dtype))
    assert out.dtype == dtype and [x.dtype for x in g] == [dtype] * 3 + [torch.float32]
    return torch.equal(e, e_ref), [rel(x, r) for x, r in zip((out, *g), (ref, *g_ref))]


# ---------------------------------------------------------------------------------------------
# CPU: the kernel entry
# ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(not has_triton(), reason="needs Triton")
def test_kernel_entry_rejects_bad_inputs_and_self_check_never_raises():
    from minimipt.ops.triton.cache_attention import cache_attention_triton, fused_self_check

    q, k, v, log_w, eligible, _ = cache_problem(1, 5, 1, 2)
    q, k, v = q.float(), k.float(), v.float()
    long = [x.float() if x.is_floating_point() else x for x in cache_problem(1, 300, 1, 2)[:5]]
    for slots, match in ((0, "slots must be an int"), (None, "slots must be an int"), (200, "min\\(slots, L\\)")):
        with pytest.raises(ValueError, match=match):
            cache_attention_triton(*long, slots)
    with pytest.raises(ValueError, match="shape \\(B, L, H, d_h\\)"):
        cache_attention_triton(q, k[:, :4], v, log_w, eligible, 2)
    with pytest.raises(ValueError, match="\\(B, L\\)"):
        cache_attention_triton(q, k, v, log_w[:, :4], eligible, 2)
    with pytest.raises(ValueError, match="one dtype"):
        cache_attention_triton(q.double(), k.double(), v.double(), log_w, eligible, 2)
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(ValueError, match="CUDA device"):
            cache_attention_triton(q, k, v, log_w, eligible, 2)
        ok, message = fused_self_check(torch.device("cpu"))
        assert not ok and "CUDA device" in message


# ---------------------------------------------------------------------------------------------
# CPU, Triton's interpreter (float32: its tl.dot does not read bf16)
# ---------------------------------------------------------------------------------------------

_INTERPRETED = r"""
import torch
from minimipt.ops.eviction import eviction_times
from minimipt.ops.triton.cache_attention import evict_blocks_triton, fused_self_check
from tests.ops.triton.test_cache_attention import fused_against_dense, held_from_evictions

# eviction times and held sets: ties, thresholds, K = 1, K >= L, L not a multiple of the block, many blocks
g = torch.Generator().manual_seed(0)
for B, L, K, C, ties, thr in ((2, 77, 5, 16, False, 0.2), (2, 150, 4, 16, True, 0.0), (1, 40, 64, 64, False, 0.0),
                              (3, 33, 1, 16, True, 0.5), (2, 100, 30, 32, True, 0.1), (1, 16, 3, 16, False, 0.0)):
    log_w = torch.randn(B, L, generator=g)
    log_w = log_w.round() if ties else log_w
    eligible = torch.rand(B, L, generator=g) >= thr
    e, held = evict_blocks_triton(log_w, eligible, K, C)
    e_ref = eviction_times(log_w, eligible, K)
    assert torch.equal(e, e_ref), (B, L, K, C)
    assert held.shape == (B, -(-L // C), min(K, L))
    assert held_from_evictions(held) == held_from_evictions(e_ref, C, min(K, L)), (B, L, K, C)
# attention: values and gradients against the dense form in float64 (float32 tolerances)
for B, L, H, dh, K, thr, ties, block in ((2, 77, 2, 8, 5, 0.2, True, None), (2, 150, 2, 4, 4, 0.0, False, 16),
                                         (1, 40, 1, 32, 64, 0.0, False, None), (2, 33, 3, 20, 1, 0.5, True, None),
                                         (2, 100, 2, 16, 30, 0.1, False, 32), (1, 9, 2, 8, 12, 0.0, False, None)):
    same_e, errs = fused_against_dense(B, L, H, dh, K, thr, ties, seed=L, block=block)
    assert same_e, (B, L, K)
    assert max(errs) < 2e-6, (B, L, H, dh, K, errs)
ok, message = fused_self_check(torch.device("cpu"))
assert ok, message
print("ok")
"""


def held_from_evictions(x, block=None, K=None):
    """Per block, the sorted positions held just before it: from a held table ``(B, n, K)`` (−1 =
    empty), or (with ``block`` and ``K``) from eviction times ``(B, L)`` (s held at t iff s ≤ t < e_s)."""
    if block is None:
        return [[sorted(s for s in row.tolist() if s >= 0) for row in seq] for seq in x]
    B, L = x.shape
    pos = torch.arange(L)
    return [[sorted(((pos < c0) & (x[b] > c0 - 1) & (x[b] > pos)).nonzero().flatten().tolist())
             for c0 in range(0, L, block)] for b in range(B)]


@pytest.mark.slow
@pytest.mark.skipif(not has_triton(), reason="needs Triton (pip install triton)")
def test_interpreted_kernels_match_the_slow_twins():
    """Eviction times equal ``eviction_times`` and the held sets follow from them; output and
    gradients of q, k, v and log w within float32 rounding of the dense form in float64: padding
    (L not a multiple of C), evictions inside and across blocks, ties, τ > 0, K = 1, K ≥ L, d_h not a
    power of two, strided q, k, v; the first-use self-check passes."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", _INTERPRETED], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_gpu
def test_auto_takes_fused_on_cuda():
    assert fused_usable(DEV, torch.bfloat16, 8192, 64)
    assert CausalSparseCache(128, 64).path(8192, DEV) == "fused"
    assert CausalSparseCache(128, 256).path(8192, DEV) == "blocked"  # K above FUSED_MAX_SLOTS


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("K,L", [(1, 77), (5, 1000), (64, 1), (64, 77), (64, 4099), (128, 1000), (128, 4099)])
@pytest.mark.parametrize("threshold,ties", [(0.0, False), (0.3, True)])
def test_float32_values_and_grads_on_gpu(K, L, threshold, ties):
    """float32 against the dense form in float64 (one block, padding, many blocks; K from 1 to the
    largest the kernels take; with and without a threshold and ties)."""
    same_e, errs = fused_against_dense(2, L, 4, 32, K, threshold, ties, seed=K + L, device=DEV)
    assert same_e
    assert max(errs) < 1e-5, errs


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_on_gpu(dtype):
    """bf16/fp16 q, k, v (as under autocast): float32 softmax and accumulation, so the result is
    within half-precision rounding of the float64 form on the same rounded inputs."""
    same_e, errs = fused_against_dense(3, 1029, 4, 32, 64, 0.1, False, seed=1, dtype=dtype, device=DEV)
    assert same_e
    assert max(errs) < 2e-2, errs


@pytest.mark.gpu
@needs_gpu
def test_eviction_times_at_benchmark_shape():
    """B 8, L 8,192, K 64 (the language model's cache): equal to the PyTorch form, ties included."""
    from minimipt.ops.triton.cache_attention import evict_blocks_triton

    g = torch.Generator().manual_seed(2)
    log_w = (torch.randn(8, 8192, generator=g) * 2).round(decimals=1).to(DEV)
    eligible = (torch.rand(8, 8192, generator=g) > 0.1).to(DEV)
    e, held = evict_blocks_triton(log_w, eligible, 64)
    assert torch.equal(e, eviction_times(log_w, eligible, 64))
    assert held_from_evictions(held.cpu()) == held_from_evictions(e.cpu(), 64, 64)


@pytest.mark.gpu
@needs_gpu
def test_language_model_fused_equals_blocked_and_captures_in_a_graph():
    """MIPTLM with K = 64: in float32 the loss and every parameter gradient of "fused" equal those of
    "blocked" (same weights); under bf16 autocast its loss stays within bf16 rounding of float32's;
    a fused training step captures in a CUDA graph and replays to finite gradients."""
    from minimipt.models import MIPTLM

    x = torch.randint(0, 256, (4, 1025), generator=torch.Generator().manual_seed(0)).to(DEV)

    def run(method, amp=False):
        torch.manual_seed(0)
        model = MIPTLM(256, 64, 2, cache_slots=64, cache_method=method).to(DEV)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x[:, :-1]).float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        return loss.item(), {n: p.grad for n, p in model.named_parameters()}

    loss_f, g_f = run("fused")
    loss_b, g_b = run("blocked")
    assert abs(loss_f - loss_b) < 1e-5 * abs(loss_b)
    for name in g_b:
        assert rel(g_f[name], g_b[name]) < 1e-3, (name, rel(g_f[name], g_b[name]))
    loss_amp, _ = run("fused", amp=True)
    assert abs(loss_amp - loss_f) < 2e-2 * abs(loss_f)
    model = MIPTLM(256, 64, 2, cache_slots=64, cache_method="fused").to(DEV)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            model(x[:, :-1]).float().square().mean().backward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    model.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        model(x[:, :-1]).float().square().mean().backward()
    graph.replay()
    torch.cuda.synchronize()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.gpu
@needs_gpu
def test_fused_keeps_less_for_backward_than_blocked():
    """At B 2, L 4,096, K 64 the fused path saves its inputs, output and lse; the blocked path its
    ``(B, L/C, H, C, K + C)`` probabilities and gathered keys: several times more."""
    q, k, v, log_w, eligible, _ = cache_problem(2, 4096, 4, 32, device=DEV)
    q, k, v, log_w = (x.float().requires_grad_() for x in (q, k, v, log_w))

    def saved_bytes(method):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            evict_and_attend(q, k, v, log_w, eligible, 64, method)
        return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}.values())

    assert saved_bytes("fused") * 3 < saved_bytes("blocked")
