"""The Triton scan kernels (minimipt.ops.triton.scan, method "triton") against the float64 sequential
reference.

* CPU: the input and configuration checks (the registration and the fallback: test_triton.py).
* CPU, Triton's interpreter: the shipped kernels' values and gradients. Triton decides at import whether
  kernels run in its interpreter (``TRITON_INTERPRET=1``), so ``test_kernels_under_the_cpu_interpreter``
  runs the ``test_interpreted_*`` tests in a pytest subprocess with the flag set; on their own they skip.
  To run them directly: ``TRITON_INTERPRET=1 pytest tests/ops/triton/test_scan.py -k interpreted``.
  The interpreter does not check bounds: out-of-range accesses show only on the GPU (compute-sanitizer).
* GPU (marked ``gpu``): the compiled kernels, ``pytest -m gpu tests/ops/triton/test_scan.py``.
"""

from __future__ import annotations

import pytest
import torch

import minimipt
from minimipt.ops import resolve_method, scan_chunked, scan_sequential
from tests._support import DEV, f32, float32_problem, interpreted, needs_gpu, rel, run_interpreted


def _values_and_grads(fn, p, theta, u, h0, gout):
    leaves = [t.detach().clone().requires_grad_() for t in (p, theta, u)]
    if h0 is not None:
        leaves.append(h0.detach().clone().requires_grad_())
    h = fn(*leaves[:3], leaves[3] if h0 is not None else None)
    loss = (h * gout.to(h.dtype).conj()).real.sum()  # dL/dh = gout
    return h, torch.autograd.grad(loss, leaves)


def _assert_matches_reference(fn, B, L, D, p_mode, seed, with_h0=True, device=torch.device("cpu")):
    """``fn(p, θ, u, h0)`` in float32 on ``device``: h and every gradient equal the float64 reference to
    1e-5, or, where float32 itself cannot (long memory, p near 0, accumulates rounding over thousands of
    steps), are at most twice as far from it as the reference loop evaluated in float32."""
    p, theta, u, h0, gout = (None if t is None else t.to(device) for t in float32_problem(B, L, D, p_mode, seed, with_h0))
    h_ref, g_ref = _values_and_grads(scan_sequential, p, theta, u, h0, gout)
    h_32, g_32 = _values_and_grads(scan_sequential, *(f32(t) for t in (p, theta, u, h0)), gout)
    h, g = _values_and_grads(fn, *(f32(t) for t in (p, theta, u, h0)), gout)
    assert h.dtype == torch.complex64
    for name, x, x32, ref in zip(("h", "p", "theta", "u", "h0"), (h, *g), (h_32, *g_32), (h_ref, *g_ref)):
        assert x.dtype == f32(ref).dtype, name
        assert rel(x, ref) <= max(1e-5, 2 * rel(x32, ref)), (name, rel(x, ref), rel(x32, ref))


# ---------------------------------------------------------------------------------------------
# CPU: input and configuration checks
# ---------------------------------------------------------------------------------------------

def test_configs_are_named_and_checked():
    from minimipt.ops.triton.scan import DEFAULT_BACKWARD, DEFAULT_FORWARD, BackwardConfig, ForwardConfig

    assert DEFAULT_FORWARD == ForwardConfig(block_l=16, block_d=16, num_warps=1, prefetch=True)
    assert DEFAULT_BACKWARD == BackwardConfig(block_l=16, block_d=32, num_warps=4, prefetch=True)
    assert ForwardConfig(16, 16, 1, True) != BackwardConfig(16, 16, 1, True)  # a role, not only four numbers
    with pytest.raises(ValueError, match=r"ForwardConfig.block_l must be a power of two.*12"):
        ForwardConfig(block_l=12, block_d=16, num_warps=1, prefetch=True)
    with pytest.raises(ValueError, match=r"BackwardConfig.num_warps"):
        BackwardConfig(block_l=16, block_d=16, num_warps=3, prefetch=True)
    with pytest.raises(ValueError, match="prefetch"):
        ForwardConfig(block_l=16, block_d=16, num_warps=1, prefetch=1)
    with pytest.raises(AttributeError):
        DEFAULT_FORWARD.block_l = 32  # frozen: nobody changes the defaults in place


def test_scan_triton_rejects_bad_inputs():
    from minimipt.ops.triton import scan as triton_scan

    c64 = torch.randn(1, 2, 3, dtype=torch.complex64)
    if triton_scan.triton is None:
        with pytest.raises(ImportError, match="triton"):
            triton_scan.scan_triton(torch.rand(1, 2, 3), torch.rand(1, 2, 3), c64)
        return
    with pytest.raises(ValueError, match="complex64"):
        triton_scan.scan_triton(torch.rand(1, 2, 3), torch.rand(1, 2, 3), torch.randn(1, 2, 3, dtype=torch.complex128))
    with pytest.raises(ValueError, match=r"\(B, L, D, 2\)"):
        triton_scan.scan_triton(torch.rand(1, 2, 3), torch.rand(1, 2, 3), torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="share"):
        triton_scan.scan_triton(torch.rand(1, 2, 3), torch.rand(1, 2, 4), c64)
    with pytest.raises(ValueError, match="forward must be a ForwardConfig"):
        triton_scan.scan_triton(torch.rand(1, 2, 3), torch.rand(1, 2, 3), c64, forward=(16, 16, 1, True))
    with pytest.raises(ValueError, match="backward must be a BackwardConfig"):
        triton_scan.scan_triton(torch.rand(1, 2, 3), torch.rand(1, 2, 3), c64, backward=triton_scan.DEFAULT_FORWARD)


# ---------------------------------------------------------------------------------------------
# CPU, Triton's interpreter
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_kernels_under_the_cpu_interpreter():
    run_interpreted(__file__)


@interpreted
@pytest.mark.parametrize("p_mode,B,L,D,with_h0", [("mixed", 2, 37, 19, True), ("near1", 1, 21, 5, False),
                                                  ("near0", 1, 30, 17, True), ("mixed", 1, 1, 3, False)])
def test_interpreted_values_and_grads(p_mode, B, L, D, with_h0):
    """The default kernels: L, D not multiples of any block, one row, p near 0, near 1 and mixed."""
    from minimipt.ops.triton.scan import scan_triton

    _assert_matches_reference(scan_triton, B, L, D, p_mode, seed=L, with_h0=with_h0)


@interpreted
def test_interpreted_bf16_pairs():
    """bf16 p, θ and u as bf16 (re, im) pairs: float32 state, so h equals the float64 reference on the
    rounded inputs to float32 accuracy; the gradients come back in bf16."""
    from minimipt.ops.triton.scan import scan_triton

    p, theta, u, h0, gout = float32_problem(1, 29, 10, "uniform", seed=5)
    pb, tb, ub = p.bfloat16(), theta.bfloat16(), torch.view_as_real(u).bfloat16()
    h_ref, g_ref = _values_and_grads(scan_sequential, pb.double(), tb.double(), torch.view_as_complex(ub.double()),
                                     h0, gout)
    h, g = _values_and_grads(scan_triton, pb, tb, ub, f32(h0), gout)
    assert g[0].dtype == g[1].dtype == g[2].dtype == torch.bfloat16 and g[3].dtype == torch.complex64
    assert rel(h, h_ref) < 1e-5
    for name, x, ref in zip(("p", "theta", "u", "h0"), (g[0], g[1], torch.view_as_complex(g[2].float()), g[3]), g_ref):
        assert rel(x, ref) < (1e-5 if name == "h0" else 1e-2), (name, rel(x, ref))  # bf16: rounding at 2^-8


@interpreted
def test_interpreted_layer_narrow_path():
    """The layer's path under autocast: float32 p, bf16 θ and u_re/u_im as strided views of one projection,
    u passed as stacked (re, im) pairs, through mipt_scan(method="triton")."""
    p, theta, u, h0, gout = float32_problem(1, 23, 11, "mixed", seed=3)
    proj = torch.cat([theta, u.real, u.imag], -1).bfloat16()  # (B, L, 3D), like in_proj's output
    tb, ur, ui = proj.split(11, dim=-1)
    h_ref, g_ref = _values_and_grads(scan_sequential, p, tb.double(), torch.complex(ur.double(), ui.double()), h0, gout)
    leaves = [f32(p).requires_grad_(), tb.detach().clone().requires_grad_(), ur.detach().clone().requires_grad_(),
              ui.detach().clone().requires_grad_(), f32(h0).requires_grad_()]
    h = minimipt.mipt_scan(leaves[0], leaves[1], torch.stack(leaves[2:4], -1), leaves[4], method="triton")
    g = torch.autograd.grad((h * gout.to(h.dtype).conj()).real.sum(), leaves)
    assert rel(h, h_ref) < 1e-5, ("h", rel(h, h_ref))
    assert g[0].dtype == torch.float32 and g[1].dtype == g[2].dtype == g[3].dtype == torch.bfloat16
    for name, x, ref, tol in (("p", g[0], g_ref[0], 1e-5), ("theta", g[1], g_ref[1], 1e-2),
                              ("u", torch.complex(g[2].double(), g[3].double()), g_ref[2], 1e-2),
                              ("h0", g[4], g_ref[3], 1e-5)):
        assert rel(x, ref) < tol, (name, rel(x, ref))


@interpreted
def test_interpreted_auto_picks_triton_and_takes_every_u_form():
    """Under the interpreter the CPU is a Triton device: "auto" picks "triton" (its first-use self-check
    passed), and mipt_scan(method="triton") takes complex64 u and its float32 and bf16 (re, im) pairs."""
    from minimipt.ops.triton import triton_available

    assert triton_available(torch.device("cpu"))  # runs the self-check once per process
    assert resolve_method("auto", torch.device("cpu")) == "triton"
    p, theta, u, _, _ = (f32(t) for t in float32_problem(1, 19, 6, "uniform", seed=2))
    ref = scan_sequential(p.double(), theta.double(), u.to(torch.complex128))
    for form in (u, torch.view_as_real(u), torch.view_as_real(u).bfloat16()):
        h = minimipt.mipt_scan(p, theta, form, method="triton")
        assert h.dtype == torch.complex64
        assert rel(h, ref) < (1e-2 if form.dtype == torch.bfloat16 else 1e-5), form.dtype


@interpreted
@pytest.mark.parametrize("every", [8, 16, 32, 12])
def test_interpreted_checkpoints_are_the_entering_states(every):
    """The forward's checkpoints are the states entering every ``every`` rows, bit for bit (inside a tile,
    at each tile, every other tile, and at an interval that divides no tile)."""
    from minimipt.ops.triton import scan as ts

    p, theta, u, h0 = (f32(t) for t in float32_problem(1, 37, 19, "mixed", seed=1)[:4])
    u2, h02 = torch.view_as_real(u), torch.view_as_real(h0)
    h2, ck2 = ts._launch_fwd(p, theta, u2, h02, ts.DEFAULT_FORWARD, every)
    assert torch.equal(ck2, torch.cat([h02[:, None], h2], 1)[:, 0:37:every])


@interpreted
@pytest.mark.parametrize("fwd,bwd", [((32, 16, 2, False), (8, 16, 1, True)), ((8, 32, 1, True), (32, 8, 1, False))],
                         ids=["fwd4x8-bwd2x4", "fwd1x8-bwd4x8"])
def test_interpreted_other_configs(fwd, bwd):
    """Other launch configurations compute the same function: (lanes × rows per thread) splits across two
    warps and within one lane, checkpoints inside a forward tile and every four forward tiles."""
    from minimipt.ops.triton.scan import BackwardConfig, ForwardConfig, scan_triton

    cfg = dict(forward=ForwardConfig(*fwd), backward=BackwardConfig(*bwd))
    _assert_matches_reference(lambda *a: scan_triton(*a, **cfg), 1, 45, 19, "mixed", seed=4)


def _check_flag_raised_by_the_kernel(device):
    """The forward kernel's value flag: 0 for valid inputs (p at exactly 0 and 1 included, bf16 pairs),
    1 for each kind of invalid value anywhere (last row, last channel, h0); mipt_scan turns it into
    the same ValueError as its separate check, and does not run that check on valid inputs."""
    from unittest import mock

    from minimipt.ops import scan as scan_module
    from minimipt.ops.triton.scan import scan_triton

    p, theta, u, h0 = (f32(t).to(device) for t in float32_problem(2, 37, 19, "mixed", seed=7)[:4])
    p[0, 0, 0], p[1, 5, 3] = 0.0, 1.0

    def flag(p, theta, u, h0):
        bad = torch.zeros(1, dtype=torch.int32, device=device)
        scan_triton(p, theta, u, h0, bad=bad)
        return int(bad.item())

    assert flag(p, theta, u, h0) == 0
    assert flag(p.bfloat16(), theta.bfloat16(), torch.view_as_real(u).bfloat16(), None) == 0
    nan, inf = float("nan"), float("inf")
    for name, where, value in (("p", (1, 36, 18), 1.0001), ("p", (0, 20, 0), -1e-7), ("p", (1, 0, 9), nan),
                               ("theta", (1, 36, 18), nan), ("theta", (0, 3, 4), -inf),
                               ("u", (1, 36, 18), complex(inf, 0)), ("u", (0, 9, 1), complex(0, nan)),
                               ("h0", (1, 18), complex(nan, 0))):
        args = {"p": p, "theta": theta, "u": u, "h0": h0}
        args[name] = args[name].clone()
        args[name][where] = value
        assert flag(*args.values()) == 1, (name, where, value)
        with pytest.raises(ValueError, match=name if name != "theta" else "theta"):
            minimipt.mipt_scan(*args.values(), method="triton")
    with mock.patch.object(scan_module, "check_scan_values", side_effect=AssertionError("separate pass ran")):
        minimipt.mipt_scan(p, theta, u, h0, method="triton")  # valid: the kernel's flag alone decides


@interpreted
def test_interpreted_kernel_flags_invalid_values():
    _check_flag_raised_by_the_kernel(torch.device("cpu"))


# ---------------------------------------------------------------------------------------------
# GPU: the compiled kernels
# ---------------------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_gpu
def test_kernel_flags_invalid_values():
    _check_flag_raised_by_the_kernel(DEV)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("p_mode", ["near0", "near1", "mixed"])
@pytest.mark.parametrize("L", [1, 77, 1000, 4099])
@pytest.mark.parametrize("with_h0", [True, False])
def test_float32_values_and_grads(p_mode, L, with_h0):
    _assert_matches_reference(lambda *a: minimipt.mipt_scan(*a, method="triton"), 2, L, 45, p_mode,
                              seed=L + 7 * with_h0, with_h0=with_h0, device=DEV)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("fwd,bwd", [((32, 16, 2, False), (8, 16, 1, True)), ((8, 32, 1, True), (32, 8, 1, False)),
                                     ((16, 32, 1, True), (16, 16, 2, False))])
@pytest.mark.parametrize("p_mode", ["near0", "near1", "mixed"])
@pytest.mark.parametrize("L", [77, 4099])
def test_other_configs_values_and_grads(fwd, bwd, p_mode, L):
    from minimipt.ops.triton.scan import BackwardConfig, ForwardConfig, scan_triton

    cfg = dict(forward=ForwardConfig(*fwd), backward=BackwardConfig(*bwd))
    _assert_matches_reference(lambda *a: scan_triton(*a, **cfg), 2, L, 45, p_mode, seed=L + 1, device=DEV)


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
    assert rel(y_n, y_w) < 1e-5
    for name in g_w:
        assert rel(g_n[name], g_w[name]) < 2e-2, (name, rel(g_n[name], g_w[name]))
    assert bytes_n < 0.6 * bytes_w, (bytes_n, bytes_w)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("narrow_u", [False, True])
def test_bf16_inputs(narrow_u):
    """bf16 p, theta (and u as bf16 (re, im) pairs): the state is float32, so the result equals the
    float64 reference on the *rounded* inputs to float32 accuracy."""
    from minimipt.ops.triton.scan import scan_triton

    B, L, D = 3, 1029, 70
    p, theta, u, h0, gout = float32_problem(B, L, D, "uniform", seed=5)
    pb, tb = p.to(DEV, torch.bfloat16), theta.to(DEV, torch.bfloat16)
    ub = torch.view_as_real(u).to(DEV, torch.bfloat16)
    u_ref = torch.view_as_complex(ub.double()) if narrow_u else u.to(DEV)
    h_ref, g_ref = _values_and_grads(scan_sequential, pb.double(), tb.double(), u_ref, h0.to(DEV), gout.to(DEV))
    u_in = ub if narrow_u else u.to(DEV, torch.complex64)
    leaves = [pb.clone().requires_grad_(), tb.clone().requires_grad_(), u_in.clone().requires_grad_(),
              h0.to(DEV, torch.complex64).requires_grad_()]
    h = scan_triton(*leaves)
    g = torch.autograd.grad((h * gout.to(DEV, torch.complex64).conj()).real.sum(), leaves)
    assert rel(h, h_ref) < 1e-5
    assert g[0].dtype == g[1].dtype == torch.bfloat16
    assert g[2].dtype == (torch.bfloat16 if narrow_u else torch.complex64)
    du = torch.view_as_complex(g[2].float()) if narrow_u else g[2]
    for name, x, ref, tol in (("p", g[0], g_ref[0], 1e-2), ("theta", g[1], g_ref[1], 1e-2),
                              ("u", du, g_ref[2], 1e-2 if narrow_u else 1e-5), ("h0", g[3], g_ref[3], 1e-5)):
        assert rel(x, ref) < tol, (name, rel(x, ref))  # bf16 gradients: rounding at 2^-8


@pytest.mark.gpu
@needs_gpu
def test_long_sequence_finite_and_exact():
    """L = 65,536 in float32 stays finite and within 1e-4 of a float64 run, or at most twice as far
    from it as the float32 reference loop."""
    B, L, D = 1, 65536, 40
    p, theta, u, h0, _ = float32_problem(B, L, D, "mixed", seed=11)
    ref = scan_chunked(p.to(DEV), theta.to(DEV), u.to(DEV), h0.to(DEV))
    args32 = tuple(f32(t).to(DEV) for t in (p, theta, u, h0))
    h = minimipt.mipt_scan(*args32, method="triton")
    assert torch.isfinite(torch.view_as_real(h)).all()
    with torch.no_grad():
        h_32 = scan_sequential(*args32)
    assert rel(h, ref) <= max(1e-4, 2 * rel(h_32, ref)), (rel(h, ref), rel(h_32, ref))


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
    assert rel(h, ref) < 1e-5
