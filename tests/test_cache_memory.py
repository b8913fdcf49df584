"""What the cache keeps for backward: its projections, attention and read-out are recomputed in the
backward pass (the same function, values and gradients), and ``log p`` is kept once for the gate's
logsigmoid and the write score's logsumexp.

The memory census of the whole language model is ``scripts/explore_model_saved_bytes.py``
(``results/explore/model-saved-bytes-cpu.json``); these tests pin the mechanisms on small shapes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import minimipt.cache
from minimipt.blocks import MIPTBlock
from minimipt.cache import CausalSparseCache
from minimipt.cache_continue import state_as_prefix
from minimipt.config import MIPTConfig
from minimipt.layer import _LogSigmoid
from minimipt.ops.cache_attention import evict_and_attend
from minimipt.ops.reference import eligible_mask, write_scores
from tests.test_triton_scan import DEV, _has_triton, needs_gpu


def kept_graph_forward(cache: CausalSparseCache, xh, log_p, state=None):
    """The cache's forward with every activation kept (no recomputation): the slow twin."""
    log_w = write_scores(log_p)
    eligible = eligible_mask(log_w, cache.write_threshold)
    q, k, v = cache._qkv(xh)
    P = 0
    if state is not None:
        prefix = state_as_prefix(state)
        P = prefix.log_w.shape[1]
        q = torch.cat([q.new_zeros(q.shape[0], P, *q.shape[2:]), q], 1)
        k, v = torch.cat([prefix.k.to(k.dtype), k], 1), torch.cat([prefix.v.to(v.dtype), v], 1)
        log_w = torch.cat([prefix.log_w.to(log_w.dtype), log_w], 1)
        eligible = torch.cat([prefix.eligible, eligible], 1)
    _, attn = evict_and_attend(q, k, v, log_w, eligible, cache.slots, cache.path(q.shape[1], xh.device))
    return cache._read_out(xh, attn[:, P:])


def _inputs(B, L, d, D, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    xh = torch.randn(B, L, d, generator=g, dtype=dtype).requires_grad_()
    z = (torch.randn(B, L, D, generator=g, dtype=dtype) * 2 - 2).requires_grad_()
    return xh, z, torch.randn(B, L, d, generator=g, dtype=dtype)


@pytest.mark.filterwarnings("ignore:minimipt. cache method 'fused' needs a CUDA device")
@pytest.mark.parametrize("method,slots,threshold", [("dense", None, 0.0), ("dense", 3, 0.2), ("slots", 3, 0.0),
                                                     ("blocked", 3, 0.2), ("blocked", 5, 0.0), ("fused", 4, 0.0)])
@pytest.mark.parametrize("continued", [False, True])
def test_recomputed_cache_equals_the_kept_graph(method, slots, threshold, continued):
    """float64: the output, the state after the tokens and the gradients of x̂, the gate logits
    (through the write score) and every parameter equal the forward that keeps every activation,
    also when continuing from a state (held slots as a prefix). "fused" runs "blocked" on the CPU."""
    torch.manual_seed(0)
    cache = CausalSparseCache(8, slots, heads=2, write_threshold=threshold, method=method).double()
    state = None
    if continued:
        with torch.no_grad():
            xh0, z0, _ = _inputs(2, 11, 8, 6, seed=7)
            _, state = cache(xh0, F.logsigmoid(z0), return_state=True)
    xh, z, gout = _inputs(2, 37, 8, 6, seed=1)
    leaves = [xh, z, *cache.parameters()]
    ref = kept_graph_forward(cache, xh, F.logsigmoid(z), state)
    grads_ref = torch.autograd.grad(ref, leaves, gout)
    out, new_state = cache(xh, F.logsigmoid(z), state=state, return_state=True)
    grads = torch.autograd.grad(out, leaves, gout)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-13)
    with torch.no_grad():  # the same state as the graph-free forward (and step by step: test_streaming)
        _, plain = cache(xh, F.logsigmoid(z), state=state, return_state=True)
    for a, b in zip((new_state.k, new_state.v, new_state.log_w, new_state.valid, new_state.pos),
                    (plain.k, plain.v, plain.log_w, plain.valid, plain.pos)):
        assert torch.equal(a, b)


def test_log_sigmoid_keeps_its_output_and_has_logsigmoid_gradient():
    """``_LogSigmoid`` = ``F.logsigmoid`` in value and gradient (float64, z from −800 to 800: σ → 0
    and σ → 1 included, where the gradient e^{−z} is subnormal; float32 within rounding), passes
    gradcheck, and keeps only its output."""
    z = torch.cat([torch.linspace(-800, 800, 4001, dtype=torch.float64), torch.tensor([0.0, 1e-8, -1e-8, 36.0, 40.0])])
    for dtype, tol in ((torch.float64, 1e-15), (torch.float32, 1e-6)):
        a, b = z.to(dtype).requires_grad_(), z.to(dtype).requires_grad_()
        ours, ref = _LogSigmoid.apply(a), F.logsigmoid(b)
        assert torch.equal(ours, ref)
        g = torch.randn(z.shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
        (ga,), (gb,) = torch.autograd.grad(ours, a, g), torch.autograd.grad(ref, b, g)
        torch.testing.assert_close(ga, gb, rtol=tol, atol=torch.finfo(dtype).tiny)  # subnormals: a few units
    assert torch.autograd.gradcheck(_LogSigmoid.apply, torch.randn(3, 5, dtype=torch.float64).mul(6).requires_grad_())
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = _LogSigmoid.apply(z.clone().requires_grad_())
    assert len(saved) == 1 and saved[0] is out


def _kept_bytes(monkeypatch, fn, params):
    """Bytes of the storages autograd keeps for backward while ``fn()`` runs (parameters left out),
    counting the tensor inputs that a checkpoint region keeps by reference."""
    kept = []
    real = minimipt.cache.checkpoint

    def counted(f, *args, **kwargs):
        kept.extend(a for a in args if isinstance(a, torch.Tensor))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(minimipt.cache, "checkpoint", counted)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = fn()
    params = {p.untyped_storage().data_ptr() for p in params}
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in kept}
    return sum(n for ptr, n in storages.items() if ptr not in params), out


@pytest.mark.parametrize("method", ["dense", "slots", "blocked"])
def test_a_cached_block_keeps_little_more_than_the_block_without_one(monkeypatch, method):
    """float32, B 2, L 96, d = D = 16, K 8: a block with a cache keeps at most ``log p`` (4·D bytes
    per token) and per-token scalars (the write score and its logsumexp, the eviction time: 16
    bytes) more than the block without: the cache's projections, attention and read-out are
    recomputed in the backward pass, x̂ is the tensor the layer's projection keeps anyway, and
    ``log p`` is kept once, not also ``z``. (Without recomputation the blocked path alone keeps its
    (B, L/C, H, C, K + C) probabilities.)"""
    B, L, d = 2, 96, 16
    x = torch.randn(B, L, d)
    kept = {}
    for slots in (0, 8):
        torch.manual_seed(0)
        block = MIPTBlock(MIPTConfig(vocab_size=4, d_model=d, cache_slots=slots, cache_heads=2, cache_method=method,
                                     scan_method="chunked"))
        kept[slots], _ = _kept_bytes(monkeypatch, lambda: block(x.requires_grad_()), block.parameters())
    assert kept[8] - kept[0] <= B * L * (4 * d + 32), kept  # measured: 4·D + 16 bytes per token


@pytest.mark.slow
@pytest.mark.skipif(not _has_triton(), reason="needs Triton (pip install triton)")
def test_interpreted_fused_cache_equals_blocked_through_the_model():
    """The cache's fused path (eviction kernel once, attention recomputed in the backward pass) run
    by Triton's interpreter: a K = 16 language model's loss and every parameter gradient equal the
    blocked path's in float32, for a whole sequence and for one continued from a state."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", _INTERPRETED_MODEL], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


_INTERPRETED_MODEL = r"""
import torch, torch.nn.functional as F
import minimipt.ops.cache_attention as ops
from minimipt.models import MIPTLM
from minimipt.ops.triton.cache_attention import fused_supports
ops.fused_usable = lambda device, dtype, length, slots: fused_supports(dtype, length, slots)  # CUDA-only check
calls = []
real = ops.attend
ops.attend = lambda *a: calls.append(a[5] is not None) or real(*a)
import minimipt.cache as cache_module
cache_module.attend = ops.attend
x = torch.randint(0, 32, (2, 81), generator=torch.Generator().manual_seed(0))
def run(method):
    torch.manual_seed(0)
    model = MIPTLM(32, 16, 2, cache_slots=16, cache_heads=2, cache_method=method, scan_method="chunked")
    _, state = model(x[:, :30], return_state=True)
    logits = model(x[:, 30:-1], state=state)
    loss = F.cross_entropy(logits.flatten(0, 1), x[:, 31:].flatten())
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters()}
loss_f, g_f = run("fused")
assert calls and all(calls), calls  # the kernels ran (eviction once, attention in forward and recomputation)
loss_b, g_b = run("blocked")
assert abs(loss_f - loss_b) <= 1e-6 * abs(loss_b), (loss_f, loss_b)
for name in g_b:
    err = ((g_f[name] - g_b[name]).norm() / g_b[name].norm().clamp(min=1e-30)).item()
    assert err < 1e-4, (name, err)
print("ok")
"""


@pytest.mark.gpu
@needs_gpu
def test_k64_model_keeps_at_most_1_25_times_the_no_cache_model(monkeypatch):
    """The scaling benchmark's models (d 128, 2 layers, V 256) under bf16 autocast on the GPU, B 2 at
    L 2,048 and 4,096: per token, the K = 64 model keeps at most 1.25× what the no-cache model keeps
    for backward (the census of ``scripts/explore_model_saved_bytes.py`` predicts ≈ 1.2)."""
    from minimipt.models import MIPTLM

    def per_token(slots):
        sizes = []
        for L in (2048, 4096):
            torch.manual_seed(0)
            model = MIPTLM(256, 128, 2, cache_slots=slots).to(DEV)
            x = torch.randint(0, 256, (2, L + 1), device=DEV)

            def run():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return F.cross_entropy(model(x[:, :-1]).float().flatten(0, 1), x[:, 1:].flatten())

            sizes.append(_kept_bytes(monkeypatch, run, model.parameters())[0])
        return (sizes[1] - sizes[0]) / (2 * 2048)

    ratio = per_token(64) / per_token(0)
    assert ratio <= 1.25, ratio
