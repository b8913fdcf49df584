"""minimipt.course.analysis: the functions behind notebooks 04-06 (the layer, the scans, the cache).
Their plots: test_viz_mechanics.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

from minimipt import MIPTLayer, mipt_scan
from minimipt.course import analysis as A
from minimipt.ops.reference import eviction_times_reference


# --------------------------------------------------------------------------------------------
# analysis: the layer
# --------------------------------------------------------------------------------------------

def test_impulse_trajectory_is_a_spiral_from_a_real_layer():
    tr = A.impulse_trajectory(-2.0, 0.7, L=30, impulses=((0, 1.0), (10, -2.0)))
    p = 1 / (1 + math.exp(2.0))
    assert tr["p"] == pytest.approx(p) and tr["memory"] == pytest.approx(1 / p)
    a = (1 - p) * torch.exp(torch.tensor(0.7j, dtype=torch.complex128))
    t = torch.arange(30)
    expect = p * a ** t - 2.0 * p * a ** (t - 10) * (t >= 10)
    assert torch.allclose(tr["h"], expect, atol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        A.impulse_trajectory(0.0, 0.0, L=5, impulses=((7, 1.0),))
    with pytest.raises(ValueError, match="real"):
        A.impulse_trajectory(0.0, 0.0, L=5, impulses=((1, 1j),))


def test_layer_memory_kernel_is_the_product_of_keep_rates():
    torch.manual_seed(0)
    layer = MIPTLayer(8, p_init=(0.05, 0.5))
    x = torch.randn(1, 20, 8)
    k = A.layer_memory_kernel(layer, x)
    z, _, _ = layer.projections(x)
    keep = 1 - torch.sigmoid(z[0].detach())
    assert k.shape == (20, 8) and torch.all(k[0] == 1)
    assert torch.allclose(k[1:], torch.cumprod(keep[1:], 0), rtol=1e-5)
    assert (k[1:] <= k[:-1]).all()
    with pytest.raises(ValueError, match="shape"):
        A.layer_memory_kernel(layer, torch.randn(2, 5, 8))


# --------------------------------------------------------------------------------------------
# analysis: the scans
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [A.scan_cumprod, A.scan_logspace])
@pytest.mark.parametrize("with_h0", [False, True])
def test_whole_sequence_forms_equal_the_loop_when_short(fn, with_h0):
    p, theta, u = A.random_scan_inputs(2, 40, 5, p_range=(0.01, 0.3), seed=1)
    h0 = torch.randn(2, 5, dtype=torch.complex128) if with_h0 else None
    ref = mipt_scan(p, theta, u, h0=h0, method="sequential")
    assert torch.allclose(fn(p, theta, u, h0), ref, atol=1e-12)


def test_cumprod_form_breaks_where_the_gate_product_underflows():
    L, D = 200, 3
    p = torch.full((1, L, D), 0.5)
    theta = torch.zeros(1, L, D)
    u = torch.ones(1, L, D, dtype=torch.complex64)
    assert not torch.isfinite(torch.view_as_real(A.scan_cumprod(p, theta, u))).all()
    assert torch.isfinite(torch.view_as_real(A.scan_logspace(p, theta, u))).all()
    assert torch.allclose(A.scan_logspace(p, theta, u), mipt_scan(p, theta, u), atol=1e-4)


def test_random_scan_inputs():
    p, theta, u = A.random_scan_inputs(2, 7, 3, p_range=(0.01, 0.1), dtype=torch.float32, seed=0)
    assert p.shape == theta.shape == u.shape == (2, 7, 3)
    assert p.dtype == torch.float32 and u.dtype == torch.complex64
    assert (p > 0).all() and (p < 1).all() and theta.abs().max() <= math.pi / 2
    p2, _, _ = A.random_scan_inputs(2, 7, 3, p_range=(0.01, 0.1), dtype=torch.float32, seed=0)
    assert torch.equal(p, p2)
    with pytest.raises(ValueError, match="p_range"):
        A.random_scan_inputs(1, 2, 2, p_range=(0.5, 0.1))


def test_scan_error_vs_length_orders_the_methods():
    r = A.scan_error_vs_length([16, 256, 1500], B=1, D=8, p_range=(0.05, 0.1))
    e = r["error"]
    assert r["L"] == [16, 256, 1500]
    assert set(e) == {(m, dt) for m in ("cumprod", "logspace", "chunked") for dt in ("float32", "float64")}
    assert e[("cumprod", "float32")][-1] == math.inf  # ∏(1 - p) ≈ e^{-110} underflows
    assert all(x < 1e-5 for x in e[("chunked", "float32")])
    assert all(x < 1e-12 for x in e[("chunked", "float64")])
    assert e[("logspace", "float32")][-1] > 3 * e[("logspace", "float32")][0]
    with pytest.raises(ValueError, match="lengths"):
        A.scan_error_vs_length([0])


def test_time_scan_returns_milliseconds():
    ms = A.time_scan("chunked", 1, 32, 4, backward=True, repeats=1)
    assert 0 < ms < 60_000
    with pytest.raises(ValueError, match="repeats"):
        A.time_scan("chunked", 1, 8, 2, repeats=0)


def test_chunk_tradeoff_error_is_flat_in_the_chunk_length():
    r = A.chunk_tradeoff([2, 8, 64], torch.float32, L=256, B=1, D=4, repeats=1)
    assert r["chunk"] == [2, 8, 64] and len(r["ms"]) == 3 and r["sequential_ms"] > 0
    assert all(e < 1e-5 for e in r["error"]) and all(m > 0 for m in r["ms"])
    r64 = A.chunk_tradeoff([4, 16], torch.float64, L=100, B=1, D=2, repeats=1)
    assert all(e < 1e-13 for e in r64["error"])
    with pytest.raises(ValueError, match="chunks"):
        A.chunk_tradeoff([1])
    with pytest.raises(ValueError, match="dtype"):
        A.chunk_tradeoff([4], torch.float16)


def test_chunked_launches_counts_far_fewer_steps_than_the_loop():
    n = A.chunked_launches(4096)
    assert 0 < n < 4096 / 20
    assert A.chunked_launches(4096, chunk=256) > n  # long chunks: more Horner steps in a row
    assert A.chunked_launches(8, chunk=16) == 7  # too short to chunk: the loop, one step per token after the first


def test_load_bench_and_table(tmp_path):
    assert A.load_bench(tmp_path) == []
    assert A.load_bench(tmp_path / "missing") == []
    result = {"device": "NVIDIA H200", "torch": "2.11", "triton": "3.6", "git_commit": "abc",
              "config": {"timer": "do_bench"},
              "rows": [{"method": "triton", "B": 32, "D": 512, "L": 8192, "dtype": "float32", "fwd_ms": 1.5,
                        "fwd_bwd_ms": 4.0, "fwd_TBps": 2.0, "rel_err": 1e-7},
                       {"method": "sequential", "B": 32, "D": 512, "L": 8192, "dtype": "bf16",
                        "error": "out of memory"}]}
    (tmp_path / "scan_h200.json").write_text(json.dumps(result))
    (tmp_path / "scan_sweep_h200.json").write_text(json.dumps({**result, "rows": []}))  # no timing rows: skipped
    loaded = A.load_bench(tmp_path)
    assert loaded == [{**result, "file": "scan_h200.json"}]
    table = A.bench_table(loaded[0])
    assert table.startswith("`scan_h200.json`: **NVIDIA H200**") and "| triton | 32, 512, 8192 | float32 | 1.500 | 4.000 |" in table
    assert "out of memory" in table
    with pytest.raises(ValueError, match="rows"):
        A.bench_table({})


# --------------------------------------------------------------------------------------------
# analysis: the cache
# --------------------------------------------------------------------------------------------

def test_synthetic_log_p():
    lp = A.synthetic_log_p(50, 6, seed=3)
    assert lp.shape == (1, 50, 6) and (lp < 0).all()
    assert torch.equal(lp, A.synthetic_log_p(50, 6, seed=3))
    assert torch.equal(lp, A.synthetic_log_p(50, 6, noise=0.5, seed=3))  # the default channel noise
    with pytest.raises(ValueError, match="L and D"):
        A.synthetic_log_p(0, 4)
    with pytest.raises(ValueError, match="noise"):
        A.synthetic_log_p(4, 4, noise=-1.0)


@pytest.mark.parametrize("K", [1, 4, 8])
def test_no_contrast_and_no_noise_is_a_sliding_window(K):
    """contrast = 0, noise = 0: every token has the same score, ties go to the recent: the last K tokens."""
    L = 40
    lp = A.synthetic_log_p(L, 16, contrast=0.0, noise=0.0, seed=1)
    assert torch.equal(lp, lp[:, :1].expand_as(lp))
    held = A.cache_membership(lp, K)["held"][0]
    t = torch.arange(L)[:, None]
    s = torch.arange(L)[None, :]
    assert torch.equal(held, (s <= t) & (s > t - K))
    # with the channel noise the scores differ at random and the cache is not a window
    noisy = A.cache_membership(A.synthetic_log_p(L, 16, contrast=0.0, noise=0.5, seed=1), K)["held"][0]
    if K > 1:
        assert not torch.equal(noisy, held)


@pytest.mark.parametrize("K,tau", [(1, 0.0), (4, 0.0), (4, 0.03), (None, 0.03), (None, 0.0)])
def test_cache_membership_matches_the_streaming_rule(K, tau):
    log_p = A.synthetic_log_p(40, 8, seed=0)
    m = A.cache_membership(log_p, K, tau)
    held = m["held"][0]
    L = 40
    assert held.shape == (L, L)
    assert not torch.triu(held, diagonal=1).any(), "causal: no key after its query"
    if K is not None:
        assert (held.sum(1) <= K).all()
    # the same sets from the slow streaming loop
    evict = eviction_times_reference(m["log_w"], m["eligible"], K)[0]
    pos = torch.arange(L)
    expect = (pos[:, None] >= pos[None, :]) & (pos[:, None] < evict[None, :])
    assert torch.equal(held, expect)
    assert torch.equal(m["used"][0], held.sum(1))
    if K is None and tau == 0.0:
        assert torch.equal(held, torch.tril(torch.ones(L, L, dtype=torch.bool)))
