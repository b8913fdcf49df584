"""The causal sparse KV cache (minimipt.cache): batched == streaming (the same slots), the dense
limit, gradients into the write score, statistics, bad arguments, the choice of path.

Then what the cache keeps for backward: its projections, attention and read-out are recomputed in
the backward pass (the same function, values and gradients), and ``log p`` is kept once for the
gate's logsigmoid and the write score's logsumexp. The memory census of the whole language model is
``scripts/explore_model_saved_bytes.py`` (``results/explore/model-saved-bytes-cpu.json``); these
tests pin the mechanisms on small shapes.

The batched forms the cache calls are tested in tests/ops/ (eviction, attention paths, fused kernels).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import minimipt.cache
from minimipt.blocks import MIPTBlock
from minimipt.cache import CausalSparseCache
from minimipt.cache_continue import state_as_prefix
from minimipt.config import MIPTConfig
from minimipt.ops.cache_attention import evict_and_attend
from minimipt.ops.eviction import eviction_times, slot_table
from minimipt.ops.reference import eligible_mask, write_scores
from tests._support import DEV, ROOT, cache_problem, has_triton, needs_gpu


def _inputs(B, L, d, D, gen, dtype=torch.float32):
    xh = torch.randn(B, L, d, generator=gen, dtype=dtype)
    log_p = F.logsigmoid(torch.randn(B, L, D, generator=gen, dtype=dtype) * 2 - 1)
    return xh, log_p


def _stream(cache, xh, log_p):
    state = cache.init_state(xh.shape[0])
    outs, tables = [], []
    for t in range(xh.shape[1]):
        r, state = cache.step(xh[:, t], log_p[:, t], state)
        outs.append(r)
        tables.append(torch.where(state.valid, state.pos, -1))
    return torch.stack(outs, 1), tables, state


@pytest.mark.parametrize("threshold", [0.0, 0.3])
@pytest.mark.parametrize("slots", [1, 4, 12, None])
def test_batched_equals_streaming(slots, threshold):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(7)
    B, L, d, D = 3, 12, 16, 8
    cache = CausalSparseCache(d, slots, heads=4, write_threshold=threshold)
    xh, log_p = _inputs(B, L, d, D, gen)
    batched, aux = cache(xh, log_p, return_aux=True)
    streamed, tables, _ = _stream(cache, xh, log_p)
    torch.testing.assert_close(streamed, batched, atol=1e-5, rtol=1e-5)
    if slots is not None:  # same slot layout, not just the same set
        table = slot_table(eviction_times(write_scores(log_p), eligible_mask(write_scores(log_p), threshold),
                                          slots), min(slots, L))
        for t in range(L):
            assert torch.equal(tables[t][:, :table.shape[2]], table[:, t])
    if threshold > 0:  # the threshold must actually have excluded something
        assert (aux.stats.eligible < L).any()


@pytest.mark.parametrize("slots", [12, 50])
def test_unbounded_forced_writes_equal_dense_causal_attention(slots):
    """K ≥ L and τ = 0: the cache is causal attention with the bias log w_s plus a null sink."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    B, L, d, D = 2, 12, 16, 8
    cache = CausalSparseCache(d, slots, heads=4)
    xh, log_p = _inputs(B, L, d, D, gen)
    out, aux = cache(xh, log_p, return_aux=True)
    q, k, v = cache._qkv(xh)  # (B, L, H, d_h)
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, L, d_h)
    zero = torch.zeros_like(k[:, :, :1])
    k_s, v_s = torch.cat([zero, k], 2), torch.cat([zero, v], 2)  # sink first
    bias = torch.cat([torch.zeros(B, 1), write_scores(log_p)], 1)  # (B, 1 + L)
    causal = torch.ones(L, L + 1).tril(1).bool()
    mask = torch.where(causal, bias[:, None, None, :], float("-inf"))  # (B, 1, L, 1 + L)
    attn = F.scaled_dot_product_attention(q, k_s, v_s, attn_mask=mask)
    ref = cache._read_out(xh, attn.transpose(1, 2))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(aux.stats.written, torch.full((B,), L))


def test_gradient_reaches_write_score_through_cache():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    for slots in (2, None):
        cache = CausalSparseCache(16, slots, heads=2)
        xh, _ = _inputs(2, 9, 16, 8, gen)
        z = torch.randn(2, 9, 8, generator=gen, requires_grad=True)
        cache(xh, F.logsigmoid(z)).square().sum().backward()
        assert z.grad is not None and z.grad.abs().sum() > 0


def test_stats_and_threshold_sparsity():
    torch.manual_seed(0)
    cache = CausalSparseCache(8, None, heads=2, write_threshold=0.5)
    xh = torch.randn(2, 6, 8)
    z = torch.full((2, 6, 4), -8.0)
    z[0, 2] = z[0, 4] = z[1, 5] = 8.0  # three tokens with w ≈ 1, the rest w ≈ 3e-4
    _, aux = cache(xh, F.logsigmoid(z), lengths=torch.tensor([6, 4]), return_aux=True)
    s = aux.stats
    assert s.written.tolist() == [2, 0] and s.held.tolist() == [2, 0] and s.length.tolist() == [6, 4]
    bounded = CausalSparseCache(8, 1, heads=2)
    b = bounded(xh, F.logsigmoid(z), return_aux=True)[1].stats
    assert b.written.tolist()[0] >= 3 and b.held.tolist() == [1, 1]
    assert 0 < aux.write_rate.item() < 1


def test_streaming_state_does_not_grow():
    torch.manual_seed(0)
    cache = CausalSparseCache(8, 3, heads=2)
    state = cache.init_state(2)
    sizes = []
    for t in range(50):
        _, state = cache.step(torch.randn(2, 8), F.logsigmoid(torch.randn(2, 4)), state)
        sizes.append(state.nbytes)
    assert len(set(sizes)) == 1 and state.valid.all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="cache_slots"):
        CausalSparseCache(8, -1)
    with pytest.raises(ValueError, match="slots >= 1"):
        CausalSparseCache(8, 0)
    with pytest.raises(ValueError, match="cache_heads"):
        CausalSparseCache(8, 4, heads=3)
    with pytest.raises(ValueError, match="write_threshold"):
        CausalSparseCache(8, 4, write_threshold=1.5)
    with pytest.raises(ValueError, match="method"):
        CausalSparseCache(8, None, method="slots")
    with pytest.raises(ValueError, match="finite"):
        CausalSparseCache(8, None, method="blocked")
    assert math.isfinite(write_scores(torch.zeros(1, 3)).sum().item())


def test_auto_path_takes_the_smaller_materialisation_and_equals_all():
    """"auto": dense while its L² logits are no more than the blocked path's L·(K + C) (C = max(K, 16)),
    blocked beyond; dense for unbounded K. The module's output is the same whichever path it takes."""
    cache = CausalSparseCache(8, 4, heads=2)  # K = 4, C = 16: dense up to L = 20
    assert cache.path(20) == "dense" and cache.path(21) == "blocked"
    assert CausalSparseCache(8, 64, heads=2).path(128) == "dense" and CausalSparseCache(8, 64, heads=2).path(129) == "blocked"
    assert CausalSparseCache(8, None, heads=2).path(10_000) == "dense"
    assert CausalSparseCache(8, 2, heads=2, method="slots").path(4) == "slots"
    torch.manual_seed(0)
    for L in (6, 40):  # one length on each side of the switch
        xh = torch.randn(2, L, 8, dtype=torch.float64)
        log_p = F.logsigmoid(torch.randn(2, L, 4, dtype=torch.float64))
        outs = {}
        for method in ("auto", "dense", "slots", "blocked"):
            c = CausalSparseCache(8, 4, heads=2, method=method).double()
            c.load_state_dict(cache.state_dict())
            outs[method] = c(xh, log_p)
        assert torch.equal(outs["auto"], outs[cache.path(L)])
        for other in ("dense", "slots", "blocked"):
            torch.testing.assert_close(outs["auto"], outs[other], rtol=1e-10, atol=1e-12)


def test_auto_path_off_cuda_is_unchanged_and_fused_needs_finite_slots():
    cache = CausalSparseCache(8, 4, heads=2)
    assert cache.path(20, "cpu") == "dense" and cache.path(21, "cpu") == "blocked"
    assert CausalSparseCache(8, 4, heads=2, method="fused").path(5) == "fused"
    with pytest.raises(ValueError, match="finite"):
        CausalSparseCache(8, None, method="fused")
    q, k, v, log_w, eligible, _ = cache_problem(1, 5, 1, 2)
    with pytest.raises(ValueError, match="method must be one of"):
        evict_and_attend(q, k, v, log_w, eligible, 2, "nope")


# ---------------------------------------------------------------------------------------------
# what the cache keeps for backward
# ---------------------------------------------------------------------------------------------

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


def _graph_inputs(B, L, d, D, seed, dtype=torch.float64):
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
            xh0, z0, _ = _graph_inputs(2, 11, 8, 6, seed=7)
            _, state = cache(xh0, F.logsigmoid(z0), return_state=True)
    xh, z, gout = _graph_inputs(2, 37, 8, 6, seed=1)
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
@pytest.mark.skipif(not has_triton(), reason="needs Triton (pip install triton)")
def test_interpreted_fused_cache_equals_blocked_through_the_model():
    """The cache's fused path (eviction kernel once, attention recomputed in the backward pass) run
    by Triton's interpreter: a K = 16 language model's loss and every parameter gradient equal the
    blocked path's in float32, for a whole sequence and for one continued from a state."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", _INTERPRETED_MODEL], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
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
