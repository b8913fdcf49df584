"""The fused mixer (minimipt.ops.triton.mixer) against its slow twin.

CPU tests (no Triton needed): the twin equals the layer's split path, bad inputs raise, the kernel
refuses the CPU without the interpreter (the layer's fallback: tests/test_layer.py). Under Triton's CPU
interpreter (the ``test_interpreted_*`` tests, run in a subprocess by
``test_kernels_under_the_cpu_interpreter`` as in triton/test_scan.py): values and gradients against the
float64 twin, and a fused layer against the split one. GPU tests are marked ``gpu``.
"""

from __future__ import annotations

import pytest
import torch

from minimipt import MIPTLayer
from minimipt.ops.triton.mixer import mixer_reference
from tests._support import has_triton, interpreted, rel, run_interpreted


def _proj(B, L, D, z_mode, seed, with_h0=True):
    """float64 ``proj`` (B, L, 4D) = [z | θ | u_re | u_im] holding float32 values, h0 (B, D) complex128
    (or None) and a real ``gy`` (B, L, D). ``z_mode``: "near0" (z = −15, p ≈ 3e-7), "near1" (z = 15),
    or "mixed" (channels cycle through −15, 15 and N(0, 4))."""
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(B, L, D, generator=g, dtype=torch.float64)
    if z_mode == "near0":
        z[:] = -15.0
    elif z_mode == "near1":
        z[:] = 15.0
    else:
        z[..., 0::3] = -15.0
        z[..., 1::3] = 15.0
    theta = 3 * torch.randn(B, L, D, generator=g, dtype=torch.float64)
    u = torch.randn(B, L, 2 * D, generator=g, dtype=torch.float64)
    proj = torch.cat([z, theta, u], -1).float().double()
    h0 = torch.randn(B, D, generator=g, dtype=torch.complex128).to(torch.complex64).to(torch.complex128) \
        if with_h0 else None
    gy = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    return proj, h0, gy


def _values_and_grads(fn, proj, h0, gy):
    """``y = fn(proj, h0)`` and the gradients of ``Σ y·gy`` w.r.t. proj (and h0)."""
    leaves = [proj.detach().clone().requires_grad_()]
    if h0 is not None:
        leaves.append(h0.detach().clone().requires_grad_())
    y = fn(leaves[0], leaves[1] if h0 is not None else None)
    return y, torch.autograd.grad((y * gy.to(y.dtype)).sum(), leaves)


# ---------------------------------------------------------------------------------------------
# CPU: the twin and the input checks
# ---------------------------------------------------------------------------------------------

def test_reference_is_the_layers_split_path():
    """mixer_reference of the layer's projection output equals the layer's own forward (and its
    gradients) with the sequential scan: the layout [z | θ | u_re | u_im] and the equations agree."""
    torch.manual_seed(0)
    layer = MIPTLayer(12, scan_method="sequential").double()
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    h0 = torch.randn(2, 12, dtype=torch.complex128)
    y = layer(x, h0)
    y_ref = mixer_reference(layer.in_proj(x), h0)
    assert torch.allclose(y, y_ref, rtol=0, atol=1e-12)
    gy = torch.randn_like(y)
    g = torch.autograd.grad((y * gy).sum(), list(layer.parameters()))
    g_ref = torch.autograd.grad((y_ref * gy).sum(), list(layer.parameters()))
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_bad_proj_raises():
    with pytest.raises(ValueError, match="multiple of 4"):
        mixer_reference(torch.zeros(2, 5, 10))
    with pytest.raises(ValueError, match=r"\(B, L, 4D\)"):
        mixer_reference(torch.zeros(5, 8))
    with pytest.raises(ValueError, match="h0 must be"):
        mixer_reference(torch.zeros(2, 5, 8), torch.zeros(2, 3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="h0 must be"):
        mixer_reference(torch.zeros(2, 5, 8), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="real floating"):
        mixer_reference(torch.zeros(2, 5, 8, dtype=torch.int64))


@pytest.mark.skipif(not has_triton(), reason="needs Triton")
def test_mixer_triton_refuses_cpu_without_interpreter(monkeypatch):
    from minimipt.ops.triton.mixer import mixer_triton

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="CUDA device"):
        mixer_triton(torch.zeros(2, 5, 8, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="multiple of 4"):
        mixer_triton(torch.zeros(2, 5, 6, dtype=torch.bfloat16))


# ---------------------------------------------------------------------------------------------
# CPU, Triton's interpreter (run by test_kernels_under_the_cpu_interpreter, as in triton/test_scan.py)
# ---------------------------------------------------------------------------------------------

def _parts(y, g, D):
    """y, then dL/dz, dL/dθ, dL/du_re, dL/du_im (B, L, D) each, then dL/dh0 if given."""
    return (y, *g[0].split(D, dim=-1), *g[1:])


NAMES = ("y", "dz", "dtheta", "du_re", "du_im", "dh0")


@pytest.mark.slow
def test_kernels_under_the_cpu_interpreter():
    run_interpreted(__file__)


@interpreted
@pytest.mark.parametrize("z_mode,L,D,with_h0,fwd,bwd", [
    ("mixed", 37, 19, True, None, None), ("near1", 21, 5, False, None, None), ("near0", 30, 17, True, None, None),
    ("mixed", 1, 3, False, None, None), ("mixed", 40, 9, True, (8, 16, 1, False), (16, 16, 1, True)),
    ("mixed", 29, 11, True, (16, 8, 2, False), (8, 16, 1, True))])
def test_interpreted_values_and_grads(z_mode, L, D, with_h0, fwd, bwd):
    """Values and gradients (proj, h0) of the default kernels within max(1e-5, twice the float32 twin's
    error) of the float64 twin: p near 0 and near 1 (z = ∓15) and mixed, L and D not multiples of the
    blocks, one row, h0 given or not; two other launch configurations (checkpoints every two forward
    tiles, and inside a forward tile). Without grad no checkpoints are written, and y is the same."""
    from minimipt.ops.triton.mixer import mixer_triton
    from minimipt.ops.triton.scan import BackwardConfig, ForwardConfig

    cfg = dict(forward=fwd and ForwardConfig(*fwd), backward=bwd and BackwardConfig(*bwd))
    proj, h0, gy = _proj(1, L, D, z_mode, seed=L, with_h0=with_h0)
    ref = _parts(*_values_and_grads(mixer_reference, proj, h0, gy), D)
    f32 = _parts(*_values_and_grads(mixer_reference, proj.float(), h0, gy), D)
    h0_32 = None if h0 is None else h0.to(torch.complex64)
    y, g = _values_and_grads(lambda x, h: mixer_triton(x, h, **cfg), proj.float(), h0_32, gy)
    assert y.dtype == torch.float32 and g[0].dtype == torch.float32
    for name, x, x32, r in zip(NAMES, _parts(y, g, D), f32, ref):
        assert rel(x, r) <= max(1e-5, 2 * rel(x32, r)), (name, rel(x, r))
    with torch.no_grad():
        assert torch.equal(mixer_triton(proj.float(), h0_32, **cfg), y)


@interpreted
@pytest.mark.parametrize("z_mode,L,D", [("mixed", 29, 10), ("near1", 18, 7)])
def test_interpreted_bf16_proj(z_mode, L, D):
    """A bf16 proj (the layer under autocast): float32 state, so y equals the float64 twin on the rounded
    values to float32 accuracy; the gradient comes back in bf16 (rounding at 2^-8)."""
    from minimipt.ops.triton.mixer import mixer_triton

    proj, h0, gy = _proj(1, L, D, z_mode, seed=5)
    pb = proj.bfloat16()
    ref = _parts(*_values_and_grads(mixer_reference, pb.double(), h0, gy), D)
    y, g = _values_and_grads(mixer_triton, pb, h0.to(torch.complex64), gy)
    assert y.dtype == torch.float32 and g[0].dtype == torch.bfloat16 and g[1].dtype == torch.complex64
    assert rel(y, ref[0]) < 1e-5, ("y", rel(y, ref[0]))
    for name, x, r in zip(NAMES[1:], _parts(y, g, D)[1:], ref[1:]):
        assert rel(x, r) < 1e-2, (name, rel(x, r))


@interpreted
def test_interpreted_fused_layer_matches_split_layer(monkeypatch):
    """Under the interpreter the CPU passes the mixer's first-use self-check, so MIPTLayer(fused_mixer=True)
    under CPU bf16 autocast takes the fused kernels; its output and parameter gradients equal the split
    path's (method "chunked" on the same bf16 projection), with and without h0."""
    import minimipt.ops.triton as K

    monkeypatch.setitem(K._CHECKED, "cpu", True)  # the scan's own self-check: triton/test_scan.py
    assert K.mixer_available(torch.device("cpu"))
    torch.manual_seed(0)
    state = MIPTLayer(12).state_dict()
    x = torch.randn(1, 19, 12)
    for h0 in (None, torch.randn(1, 12, dtype=torch.complex64)):
        out = []
        for fused in (True, False):
            layer = MIPTLayer(12, fused_mixer=fused, scan_method="auto" if fused else "chunked")
            layer.load_state_dict(state)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = layer(x, h0)
            assert (type(y.grad_fn).__name__ == "TritonMixerBackward") == fused, type(y.grad_fn).__name__
            y.float().square().mean().backward()
            out.append((y, {n: q.grad for n, q in layer.named_parameters()}))
        (y_f, g_f), (y_s, g_s) = out
        assert y_f.dtype == y_s.dtype == torch.float32
        assert rel(y_f, y_s) < 1e-5, ("y", rel(y_f, y_s))
        for name in g_s:
            assert rel(g_f[name], g_s[name]) < 2e-2, (name, rel(g_f[name], g_s[name]))


# ---------------------------------------------------------------------------------------------
# GPU: the compiled kernels (pytest -m gpu tests/ops/triton/test_mixer.py on a GPU machine)
# ---------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and has_triton()), reason="needs a CUDA device and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("z_mode", ["mixed", "near1"])
def test_gpu_mixer_matches_reference(dtype, z_mode):
    """The compiled kernels at a shape spanning many tiles and programs (L, D not multiples of the
    blocks), against the float64 twin on the same (rounded) proj."""
    from minimipt.ops.triton.mixer import mixer_triton

    dev = torch.device("cuda")
    proj, h0, gy = (t.to(dev) for t in _proj(4, 300, 130, z_mode, seed=1))
    x = proj.to(dtype)
    ref = _values_and_grads(mixer_reference, x.double(), h0, gy)
    y, g = _values_and_grads(mixer_triton, x, h0.to(torch.complex64), gy)
    assert g[0].dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert rel(y, ref[0]) < 1e-5
    assert rel(g[0], ref[1][0]) < tol and rel(g[1], ref[1][1]) < 1e-5
