"""The causal sparse KV cache: membership rule, batched == streaming, dense limit, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minimipt.cache import CausalSparseCache
from minimipt.ops.cache_attention import cache_attention_blocked, cache_attention_slots
from minimipt.ops.eviction import eviction_times, eviction_times_pairwise, slot_table
from minimipt.ops.reference import cache_attention_dense, eligible_mask, eviction_times_reference, write_scores


def _scores(B, L, ties, gen):
    if ties:  # few distinct values: exercises the tie rule (the more recent wins)
        return torch.randint(0, 3, (B, L), generator=gen).double() - 3.0
    return torch.randn(B, L, generator=gen, dtype=torch.float64) - 2.0


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("slots", [None, 1, 2, 4, 9, 30])
def test_eviction_times_match_streaming_loop(slots, ties):
    gen = torch.Generator().manual_seed(1 + (slots or 0) + 100 * ties)
    for _ in range(20):
        L = int(torch.randint(1, 24, (1,), generator=gen))
        log_w = _scores(3, L, ties, gen)
        eligible = torch.rand(3, L, generator=gen) > 0.3
        ref = eviction_times_reference(log_w, eligible, slots)
        assert torch.equal(eviction_times(log_w, eligible, slots), ref)
        assert torch.equal(eviction_times_pairwise(log_w, eligible, slots, max_elements=17), ref)  # small chunks


@pytest.mark.parametrize("block", [1, 4, 16])
def test_eviction_times_over_many_blocks_match_the_rank_formula(block):
    """Long rows (many blocks of the prefix top-K, a ragged last one), ties and ineligible tokens."""
    gen = torch.Generator().manual_seed(block)
    for K in (1, 7, 40):
        log_w = _scores(2, 203, True, gen)
        eligible = torch.rand(2, 203, generator=gen) > 0.3
        ref = eviction_times_pairwise(log_w, eligible, K)
        assert torch.equal(eviction_times(log_w, eligible, K, block=block), ref)


def test_held_set_is_causal_top_k():
    """At every t the held positions are exactly the top-K eligible s ≤ t by (w_s, s)."""
    gen = torch.Generator().manual_seed(3)
    L, K = 20, 4
    log_w = _scores(2, L, True, gen)
    eligible = torch.rand(2, L, generator=gen) > 0.2
    e = eviction_times(log_w, eligible, K)
    for b in range(2):
        for t in range(L):
            held = {s for s in range(t + 1) if s < e[b, s] and t < e[b, s]}
            cands = sorted((s for s in range(t + 1) if eligible[b, s]), key=lambda s: (log_w[b, s].item(), s))
            assert held == set(cands[-K:])
            assert len(held) <= K and all(s <= t for s in held)


def test_write_scores_log_space():
    z = torch.randn(2, 5, 8, dtype=torch.float64) * 30  # saturating logits
    log_w = write_scores(F.logsigmoid(z))
    assert torch.isfinite(log_w).all()
    torch.testing.assert_close(log_w.exp(), torch.sigmoid(z).mean(-1))
    assert eligible_mask(log_w, 0.0).all()
    torch.testing.assert_close(eligible_mask(log_w, 0.3), torch.sigmoid(z).mean(-1) >= 0.3)


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
