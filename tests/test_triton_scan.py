"""The Triton scan kernel (method "triton") against the sequential reference.

GPU tests are marked ``gpu`` and skipped without CUDA and Triton (``pytest -m gpu tests/test_triton_scan.py``
on a GPU machine). The CPU tests check the registration: importing minimipt never imports Triton,
and without a GPU "auto" falls back to "chunked" without raising. Where Triton is installed (not in
CI), the kernels also run on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``, in a
subprocess: the flag must be set before the kernels are compiled), both backwards.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import minimipt
from minimipt.ops import resolve_method, scan_chunked, scan_sequential


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and _has_triton()),
                               reason="needs a CUDA device and Triton")
DEV = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().to(ref.dtype), ref.detach()
    return float((x - ref).abs().norm() / ref.abs().norm().clamp_min(1e-300))


def _problem(B, L, D, p_mode, seed, with_h0=True):
    """float64 tensors on the CPU holding float32 values: p, theta, u, h0 (or None), gout."""
    g = torch.Generator().manual_seed(seed)
    if p_mode == "near0":
        p = torch.full((B, L, D), 1e-6, dtype=torch.float64)
    elif p_mode == "near1":
        p = torch.full((B, L, D), 1 - 1e-6, dtype=torch.float64)
    elif p_mode == "uniform":  # away from 0 and 1 (bf16 rounds 1 - 1e-6 to exactly 1)
        p = 0.01 + 0.98 * torch.rand(B, L, D, generator=g, dtype=torch.float64)
    else:  # mixed: all three regimes, channel by channel
        p = torch.rand(B, L, D, generator=g, dtype=torch.float64)
        p[..., 0::3] = 1e-6
        # near 1 but never exactly 1 after float32 rounding: at p = 1 torch.polar's backward (used by
        # the reference) drops the gate's term of dL/dp (sgn(0) = 0), while the kernel keeps it
        p[..., 1::3] = 1 - 1e-6 * (0.5 + torch.rand(B, L, len(range(1, D, 3)), generator=g, dtype=torch.float64))
    theta = 3 * torch.randn(B, L, D, generator=g, dtype=torch.float64)
    u = torch.randn(B, L, D, generator=g, dtype=torch.complex128)
    h0 = torch.randn(B, D, generator=g, dtype=torch.complex128) if with_h0 else None
    gout = torch.randn(B, L, D, generator=g, dtype=torch.complex128)
    # rounded to float32, so the float64 reference computes the function the kernel is given
    f32 = lambda t: None if t is None else t.to(torch.complex64 if t.is_complex() else torch.float32).to(t.dtype)  # noqa: E731
    return f32(p), f32(theta), f32(u), f32(h0), gout


def _values_and_grads(fn, p, theta, u, h0, gout):
    leaves = [t.detach().clone().requires_grad_() for t in (p, theta, u)]
    if h0 is not None:
        leaves.append(h0.detach().clone().requires_grad_())
    h = fn(*leaves[:3], leaves[3] if h0 is not None else None)
    loss = (h * gout.to(h.dtype).conj()).real.sum()  # dL/dh = gout
    return h, torch.autograd.grad(loss, leaves)


# ---------------------------------------------------------------------------------------------
# CPU: registration and fallback
# ---------------------------------------------------------------------------------------------

def test_import_does_not_import_triton():
    code = "import sys, minimipt; assert 'triton' not in sys.modules, 'triton imported'; " \
           "assert 'triton' in minimipt.scan_methods(); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_cpu_auto_falls_back_to_chunked_and_method_matches():
    assert resolve_method("auto", torch.device("cpu")) in ("chunked",)
    from minimipt.ops.triton import scan_triton_or_chunked, triton_available

    assert not triton_available(torch.device("cpu"))
    p, theta, u, h0, _ = _problem(2, 33, 5, "mixed", 0)
    h = scan_triton_or_chunked(p, theta, u, h0)  # CPU: runs "chunked"
    assert torch.allclose(h, scan_chunked(p, theta, u, h0))
    with pytest.raises(ValueError, match="not available"):
        minimipt.mipt_scan(p, theta, u, h0, method="triton")


def test_scan_triton_rejects_bad_inputs():
    from minimipt.ops.triton import scan as triton_scan

    if triton_scan.triton is None:
        with pytest.raises(ImportError, match="triton"):
            triton_scan.scan_triton(torch.rand(1, 2, 3), torch.rand(1, 2, 3), torch.randn(1, 2, 3, dtype=torch.complex64))
        return
    with pytest.raises(ValueError, match="complex64"):
        triton_scan.scan_triton(torch.rand(1, 2, 3), torch.rand(1, 2, 3), torch.randn(1, 2, 3, dtype=torch.complex128))
    with pytest.raises(ValueError, match=r"\(B, L, D, 2\)"):
        triton_scan.scan_triton(torch.rand(1, 2, 3), torch.rand(1, 2, 3), torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="share"):
        triton_scan.scan_triton(torch.rand(1, 2, 3), torch.rand(1, 2, 4), torch.randn(1, 2, 3, dtype=torch.complex64))


# ---------------------------------------------------------------------------------------------
# CPU, Triton's interpreter: both backwards against the reference (skipped without Triton)
# ---------------------------------------------------------------------------------------------

_INTERPRETED = r"""
import torch
from minimipt.ops import scan_sequential
from minimipt.ops.triton import scan as ts
from tests.test_triton_scan import _problem, _rel, _values_and_grads

f64 = lambda t: None if t is None else t.double() if not t.is_complex() else t.to(torch.complex128)
f32 = lambda t: None if t is None else t.to(torch.complex64 if t.is_complex() else torch.float32)
# (backward, its configuration, the forward's configuration: None = DEFAULT_CONFIG)
CASES = [(b, c, None) for b, c in (("saved_h", None), ("recompute", (8, 16, 1, 0, True)),
                      ("recompute", (16, 8, 2, 1, False)),
                      # shift 2, one per (lanes, rows per thread) split of the sweep: 4 x 4; 1 x 8
                      # (prefetch); 4 x 8; 4 x 2 (prefetch); 2 x 8 (prefetch); 8 x 2; 8 x 4; 2 x 4
                      ("recompute", (16, 8, 1, 2, False)), ("recompute", (8, 32, 1, 2, True)),
                      ("recompute", (32, 16, 2, 2, False)), ("recompute", (16, 16, 2, 2, False)),
                      ("recompute", (8, 16, 2, 2, True)), ("recompute", (16, 16, 1, 2, True)),
                      ("recompute", (16, 16, 4, 2, False)), ("recompute", (32, 16, 4, 2, False)),
                      ("recompute", (8, 16, 1, 2, False)))]
# the rows-per-thread forward (v5, rows=True) writing the recompute backward's checkpoints: every
# 16 rows = its tile (2 lanes x 8 rows, prefetch), every 16 rows inside a 32-row tile (4 x 8, only a
# thread's last row), every 8 rows = its tile (4 x 2, prefetch), every 16 rows = two 8-row tiles
# (8 x 1), every 16 rows inside a 32-row tile of 1 lane x 32 rows (every slab may hold one); one with
# the "saved_h" backward (no checkpoints)
CASES += [("recompute", (16, 16, 2, 2, False), (16, 16, 1, False, False, True, None, True)),
          ("recompute", (16, 16, 2, 2, False), (32, 16, 2, False, False, False, None, True)),
          ("recompute", (8, 8, 1, 2, False), (8, 8, 1, False, False, True, None, True)),
          ("recompute", (16, 8, 1, 0, False), (8, 16, 4, False, False, False, None, True)),
          ("recompute", (16, 16, 2, 2, False), (32, 32, 1, False, False, True, None, True)),
          ("saved_h", None, (16, 8, 2, False, False, False, None, True)),
          # the defaults of session 4 spelled out, and the default backward after the v3 forward
          ("recompute", (16, 32, 4, 2, True), (16, 16, 1, False, False, True, None, True)),
          ("recompute", None, (16, 16, 1, False, False, True))]
for backward, cfg, fwd in CASES:
    # L, D not multiples of any block; one tile shorter than a block; p near 0, near 1, mixed
    for p_mode, L, D, with_h0 in (("mixed", 37, 19, True), ("near1", 21, 5, False), ("near0", 30, 17, True),
                                  ("mixed", 1, 3, False)):
        p, theta, u, h0, gout = _problem(2, L, D, p_mode, seed=L, with_h0=with_h0)
        h_ref, g_ref = _values_and_grads(scan_sequential, p, theta, u, h0, gout)
        h_32, g_32 = _values_and_grads(scan_sequential, *(f32(t) for t in (p, theta, u, h0)), gout)
        fn = lambda *a: ts.scan_triton(*a, fwd_config=fwd, bwd_config=cfg, backward=backward)
        h, g = _values_and_grads(fn, *(f32(t) for t in (p, theta, u, h0)), gout)
        for name, x, x32, ref in zip(("h", "p", "theta", "u", "h0"), (h, *g), (h_32, *g_32), (h_ref, *g_ref)):
            assert _rel(x, ref) <= max(1e-5, 2 * _rel(x32, ref)), (backward, cfg, fwd, p_mode, L, name, _rel(x, ref))
    # bf16 p, theta and u as bf16 (re, im) pairs: float32 state, the reference on the rounded inputs
    p, theta, u, h0, gout = _problem(2, 29, 10, "uniform", seed=5)
    pb, tb, ub = p.bfloat16(), theta.bfloat16(), torch.view_as_real(u).bfloat16()
    h_ref, g_ref = _values_and_grads(scan_sequential, pb.double(), tb.double(),
                                     torch.view_as_complex(ub.double()), h0, gout)
    h, g = _values_and_grads(lambda *a: ts.scan_triton(*a, fwd_config=fwd, bwd_config=cfg, backward=backward),
                             pb, tb, ub, f32(h0), gout)
    assert g[0].dtype == g[1].dtype == g[2].dtype == torch.bfloat16
    assert _rel(h, h_ref) < 1e-5, (backward, "bf16 h")
    for name, x, ref in zip(("p", "theta", "u", "h0"), (g[0], g[1], torch.view_as_complex(g[2].float()), g[3]), g_ref):
        assert _rel(x, ref) < 1e-2, (backward, "bf16", name, _rel(x, ref))
# the layer's narrow path: float32 p, bf16 theta and u_re/u_im as strided views of one projection,
# u passed as (re, im) pairs
p, theta, u, h0, gout = _problem(2, 23, 11, "mixed", seed=3)
proj = torch.cat([theta, u.real, u.imag], -1).bfloat16()  # (B, L, 3D), like in_proj's output
tb, ur, ui = proj.split(11, dim=-1)
h_ref, g_ref = _values_and_grads(scan_sequential, p, tb.double(), torch.complex(ur.double(), ui.double()), h0, gout)
leaves = [f32(p).requires_grad_(), tb.detach().clone().requires_grad_(), ur.detach().clone().requires_grad_(),
          ui.detach().clone().requires_grad_(), f32(h0).requires_grad_()]
h = ts.scan_triton(leaves[0], leaves[1], torch.stack(leaves[2:4], -1), leaves[4])
g = torch.autograd.grad((h * gout.to(h.dtype).conj()).real.sum(), leaves)
assert _rel(h, h_ref) < 1e-5, ("narrow h", _rel(h, h_ref))
assert g[0].dtype == torch.float32 and g[1].dtype == g[2].dtype == g[3].dtype == torch.bfloat16
for name, x, ref, tol in (("p", g[0], g_ref[0], 1e-5), ("theta", g[1], g_ref[1], 1e-2),
                          ("u", torch.complex(g[2].double(), g[3].double()), g_ref[2], 1e-2), ("h0", g[4], g_ref[3], 1e-5)):
    assert _rel(x, ref) < tol, ("narrow", name, _rel(x, ref))
# the checkpoints are the states entering each chunk, exactly
p, theta, u, h0, _ = _problem(2, 37, 19, "mixed", seed=1)
u2, h02 = torch.view_as_real(f32(u)), torch.view_as_real(f32(h0))
for every in (4, 8, 16, 32, 12):
    h2, ck2 = ts._launch_fwd(f32(p), f32(theta), u2, h02, ts.DEFAULT_CONFIG, every)
    entering = torch.cat([h02[:, None], h2], 1)[:, 0:37:every]
    assert torch.equal(ck2, entering), every
    # the rows forward: its checkpoints are its own h bit for bit, and h and the checkpoints equal
    # the tree-scan forward's to float32 rounding (the two add the same terms in another order)
    for fwd in ((16, 16, 1, False, False, True, None, True), (32, 16, 2, False, False, False, None, True),
                (32, 32, 1, False, False, False, None, True), (8, 8, 2, False, False, True, None, True)):
        h2r, ck2r = ts._launch_fwd(f32(p), f32(theta), u2, h02, fwd, every)
        assert torch.equal(ck2r, torch.cat([h02[:, None], h2r], 1)[:, 0:37:every]), (every, fwd)
        assert torch.allclose(h2r, h2, rtol=0, atol=2e-6) and torch.allclose(ck2r, ck2, rtol=0, atol=2e-6), (every, fwd)
print("ok")
"""


@pytest.mark.skipif(not _has_triton(), reason="needs Triton (pip install triton); CI has none")
def test_interpreted_kernels_match_reference_both_backwards():
    """Values and gradients of both backwards ("saved_h" and "recompute", the latter with the
    exclusive-scan shift, the gather shift and the rows-per-thread recurrences) equal the float64 reference, or are at most twice as far
    from it as the float32 loop, also with the rows-per-thread forward (v5) writing the checkpoints;
    bf16 inputs; the forward's checkpoints are exact (the rows forward's equal its own h bit for bit
    and the tree-scan forward's to float32 rounding). The interpreter
    does not check bounds: out-of-range accesses show only on the GPU (compute-sanitizer)."""
    import os
    from pathlib import Path

    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", _INTERPRETED], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# GPU: values and gradients against the reference
# ---------------------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_gpu
def test_auto_picks_triton_on_cuda():
    assert resolve_method("auto", DEV) == "triton"


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("p_mode", ["near0", "near1", "mixed"])
@pytest.mark.parametrize("L", [1, 77, 1000, 4099])
@pytest.mark.parametrize("with_h0", [True, False])
def test_float32_values_and_grads(p_mode, L, with_h0):
    """Values and all gradients equal the float64 reference to 1e-5, or, where float32 itself
    cannot (long memory, p near 0, accumulates rounding over thousands of steps), are at most
    twice as far from it as the reference loop evaluated in float32."""
    B, D = 2, 45  # D not a multiple of any block
    p, theta, u, h0, gout = _problem(B, L, D, p_mode, seed=L + 7 * with_h0, with_h0=with_h0)
    to = lambda t: None if t is None else t.to(DEV)  # noqa: E731
    f32 = lambda t: None if t is None else t.to(DEV, torch.complex64 if t.is_complex() else torch.float32)  # noqa: E731
    h_ref, g_ref = _values_and_grads(scan_sequential, *(to(t) for t in (p, theta, u, h0, gout)))
    h_32, g_32 = _values_and_grads(scan_sequential, *(f32(t) for t in (p, theta, u, h0)), to(gout))
    h, g = _values_and_grads(lambda *a: minimipt.mipt_scan(*a, method="triton"),
                             *(f32(t) for t in (p, theta, u, h0)), to(gout))
    assert h.dtype == torch.complex64
    assert _rel(h, h_ref) <= max(1e-5, 2 * _rel(h_32, h_ref)), (_rel(h, h_ref), _rel(h_32, h_ref))
    for name, x, x32, ref in zip(("p", "theta", "u", "h0"), g, g_32, g_ref):
        assert x.dtype == (torch.complex64 if ref.is_complex() else torch.float32), name
        assert _rel(x, ref) <= max(1e-5, 2 * _rel(x32, ref)), (name, _rel(x, ref), _rel(x32, ref))


@pytest.mark.gpu
@needs_gpu
def test_layer_under_autocast_keeps_theta_and_u_narrow():
    """MIPTLayer under bf16 autocast with the kernel: the same output and parameter gradients as the
    wide path (method "chunked" on the same bf16 projection), and less memory kept for backward."""
    from minimipt import MIPTLayer

    torch.manual_seed(0)
    x = torch.randn(4, 1000, 64, device=DEV)

    def run(method):
        layer = MIPTLayer(64, scan_method=method).to(DEV)
        layer.load_state_dict(ref_state)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = layer(x)
        nbytes = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}.values())
        y.float().square().mean().backward()
        return y.float(), {n: q.grad for n, q in layer.named_parameters()}, nbytes

    ref_state = MIPTLayer(64).to(DEV).state_dict()
    y_n, g_n, bytes_n = run("triton")
    y_w, g_w, bytes_w = run("chunked")
    assert _rel(y_n, y_w) < 1e-5
    for name in g_w:
        assert _rel(g_n[name], g_w[name]) < 2e-2, (name, _rel(g_n[name], g_w[name]))
    assert bytes_n < 0.6 * bytes_w, (bytes_n, bytes_w)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("narrow_u", [False, True])
def test_bf16_inputs(narrow_u):
    """bf16 p, theta (and u as bf16 (re, im) pairs): the state is float32, so the result equals the
    float64 reference on the *rounded* inputs to float32 accuracy."""
    from minimipt.ops.triton.scan import scan_triton

    B, L, D = 3, 1029, 70
    p, theta, u, h0, gout = _problem(B, L, D, "uniform", seed=5)
    pb, tb = p.to(DEV, torch.bfloat16), theta.to(DEV, torch.bfloat16)
    ub = torch.view_as_real(u).to(DEV, torch.bfloat16)
    u_ref = torch.view_as_complex(ub.double()) if narrow_u else u.to(DEV)
    h_ref, g_ref = _values_and_grads(scan_sequential, pb.double(), tb.double(), u_ref, h0.to(DEV), gout.to(DEV))
    u_in = ub if narrow_u else u.to(DEV, torch.complex64)
    leaves = [pb.clone().requires_grad_(), tb.clone().requires_grad_(), u_in.clone().requires_grad_(),
              h0.to(DEV, torch.complex64).requires_grad_()]
    h = scan_triton(*leaves)
    g = torch.autograd.grad((h * gout.to(DEV, torch.complex64).conj()).real.sum(), leaves)
    assert _rel(h, h_ref) < 1e-5
    assert g[0].dtype == g[1].dtype == torch.bfloat16
    assert g[2].dtype == (torch.bfloat16 if narrow_u else torch.complex64)
    du = torch.view_as_complex(g[2].float()) if narrow_u else g[2]
    for name, x, ref, tol in (("p", g[0], g_ref[0], 1e-2), ("theta", g[1], g_ref[1], 1e-2),
                              ("u", du, g_ref[2], 1e-2 if narrow_u else 1e-5), ("h0", g[3], g_ref[3], 1e-5)):
        assert _rel(x, ref) < tol, (name, _rel(x, ref))  # bf16 gradients: rounding at 2^-8


@pytest.mark.gpu
@needs_gpu
def test_long_sequence_finite_and_exact():
    """L = 65,536 in float32 stays finite and within 1e-4 of a float64 run, or at most twice as far
    from it as the float32 reference loop."""
    B, L, D = 1, 65536, 40
    p, theta, u, h0, _ = _problem(B, L, D, "mixed", seed=11)
    ref = scan_chunked(p.to(DEV), theta.to(DEV), u.to(DEV), h0.to(DEV))
    args32 = (p.to(DEV, torch.float32), theta.to(DEV, torch.float32), u.to(DEV, torch.complex64),
              h0.to(DEV, torch.complex64))
    h = minimipt.mipt_scan(*args32, method="triton")
    assert torch.isfinite(torch.view_as_real(h)).all()
    with torch.no_grad():
        h_32 = scan_sequential(*args32)
    assert _rel(h, ref) <= max(1e-4, 2 * _rel(h_32, ref)), (_rel(h, ref), _rel(h_32, ref))


@pytest.mark.gpu
@needs_gpu
def test_every_output_written_and_equals_chunked_at_benchmark_like_shape():
    """A wide shape (several column blocks, many tiles): equal to "chunked" in float32."""
    B, L, D = 4, 3001, 300
    g = torch.Generator().manual_seed(3)
    p = torch.sigmoid(2 * torch.randn(B, L, D, generator=g) - 3).to(DEV)
    theta = torch.randn(B, L, D, generator=g).to(DEV)
    u = torch.randn(B, L, D, generator=g, dtype=torch.complex64).to(DEV)
    h = minimipt.mipt_scan(p, theta, u, method="triton")
    ref = minimipt.mipt_scan(p.double(), theta.double(), u.to(torch.complex128), method="chunked")
    assert torch.isfinite(torch.view_as_real(h)).all()
    assert _rel(h, ref) < 1e-5


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("backward,cfg", [("saved_h", None), ("recompute", None), ("recompute", (8, 16, 1, 0, True)),
                                          ("recompute", (16, 8, 1, 1, False)), ("recompute", (16, 16, 4, 1, True)),
                                          ("recompute", (16, 8, 1, 2, False)), ("recompute", (32, 8, 1, 2, True))])
@pytest.mark.parametrize("p_mode", ["near0", "near1", "mixed"])
@pytest.mark.parametrize("L", [1, 77, 4099])
def test_both_backwards_values_and_grads(backward, cfg, p_mode, L):
    """Each backward (and a few recompute configurations: exclusive-scan shift, gather shift and
    rows per thread, with and without prefetch) against the float64 reference, as test_float32_values_and_grads."""
    from minimipt.ops.triton.scan import scan_triton

    _assert_matches_reference_on_gpu(lambda *a: scan_triton(*a, bwd_config=cfg, backward=backward), L, p_mode, L + 1)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("fwd", [(16, 16, 1, False, False, True, None, True), (32, 16, 2, False, False, False, None, True),
                                 (16, 32, 1, False, False, True, None, True)])
@pytest.mark.parametrize("p_mode", ["near0", "near1", "mixed"])
@pytest.mark.parametrize("L", [77, 4099])
def test_rows_forward_values_and_grads(fwd, p_mode, L):
    """The rows-per-thread forward (v5, ``rows=True``) writing the default recompute backward's
    checkpoints (every 16 rows: its tile, or inside its 32-row tile) against the float64
    reference, as test_float32_values_and_grads."""
    from minimipt.ops.triton.scan import scan_triton

    _assert_matches_reference_on_gpu(lambda *a: scan_triton(*a, fwd_config=fwd, backward="recompute"), L, p_mode,
                                     L + 2)


def _assert_matches_reference_on_gpu(fn, L, p_mode, seed):
    """``fn(p, θ, u, h0)`` on the GPU in float32: values and every gradient within max(1e-5, twice the
    float32 loop's error) of the float64 reference, as test_float32_values_and_grads."""
    B, D = 2, 45
    p, theta, u, h0, gout = _problem(B, L, D, p_mode, seed=seed)
    to = lambda t: t.to(DEV)  # noqa: E731
    f32 = lambda t: t.to(DEV, torch.complex64 if t.is_complex() else torch.float32)  # noqa: E731
    h_ref, g_ref = _values_and_grads(scan_sequential, *(to(t) for t in (p, theta, u, h0, gout)))
    h_32, g_32 = _values_and_grads(scan_sequential, *(f32(t) for t in (p, theta, u, h0)), to(gout))
    h, g = _values_and_grads(fn, *(f32(t) for t in (p, theta, u, h0)), to(gout))
    for name, x, x32, ref in zip(("h", "p", "theta", "u", "h0"), (h, *g), (h_32, *g_32), (h_ref, *g_ref)):
        assert _rel(x, ref) <= max(1e-5, 2 * _rel(x32, ref)), (name, _rel(x, ref), _rel(x32, ref))
