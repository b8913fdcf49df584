"""MIPTLayer: step == forward, options, parameter storage, errors, the fused mixer's opt-in (taken only
where it applies, else the split path bit for bit), and the log-sigmoid that keeps only its output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minimipt import MIPTLayer
from minimipt.layer import _LogSigmoid
from minimipt.ops import scan_sequential
from tests._support import interpreting


@pytest.mark.parametrize("phase", ["input", "static"])
@pytest.mark.parametrize("readout,d_state", [("real", None), ("proj", 6)])
def test_step_equals_forward(phase, readout, d_state):
    torch.manual_seed(0)
    layer = MIPTLayer(8, d_state, phase=phase, readout=readout)
    x = torch.randn(3, 40, 8)
    y = layer(x)
    state = layer.init_state(3)
    ys = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, rtol=1e-5, atol=1e-5)
    assert y.shape == x.shape


def test_forward_is_the_equations():
    """The layer computes exactly PAPER.md §1 with the sequential reference scan (on its input x̂:
    the pre-norm belongs to the block)."""
    torch.manual_seed(1)
    layer = MIPTLayer(6).double()
    x = torch.randn(2, 11, 6, dtype=torch.float64)
    W, b = layer.in_proj.weight, layer.in_proj.bias
    Wp, Wt, Wr, Wi = W.chunk(4)
    bp, bt, br, bi = b.chunk(4)
    p = torch.sigmoid(x @ Wp.T + bp)
    theta = x @ Wt.T + bt
    u = torch.complex(x @ Wr.T + br, x @ Wi.T + bi)
    h = scan_sequential(p, theta, u)
    torch.testing.assert_close(layer(x), h.real)


def test_aux_and_log_space_gates():
    layer = MIPTLayer(4)
    y, aux = layer(torch.randn(2, 5, 4), return_aux=True)
    torch.testing.assert_close(aux.log_p.exp(), aux.p)
    assert aux.h.is_complex() and aux.h.shape == (2, 5, 4)
    p, log_p, log_1mp = MIPTLayer.gates(torch.tensor([-100.0, 0.0, 100.0]))
    assert torch.isfinite(log_p).all() and torch.isfinite(log_1mp).all()  # no log(0)
    torch.testing.assert_close(log_p[1], torch.tensor(0.5).log())


def test_parameters_are_real_and_initial_rates_are_in_range():
    layer = MIPTLayer(16, phase="static")
    assert all(not p.is_complex() for p in layer.parameters())
    sd = layer.state_dict()
    assert all(not v.is_complex() for v in sd.values())
    p0 = torch.sigmoid(layer.in_proj.bias[:16])
    assert (p0 >= 1e-3 * 0.999).all() and (p0 <= 0.1 * 1.001).all()


def test_h0_continues_a_sequence():
    torch.manual_seed(2)
    layer = MIPTLayer(5)
    x = torch.randn(2, 30, 5)
    y_full, aux = layer(x, return_aux=True)
    y_a, aux_a = layer(x[:, :12], return_aux=True)
    y_b = layer(x[:, 12:], h0=aux_a.h[:, -1])
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y_full, rtol=1e-5, atol=1e-5)


def test_gradients_flow_to_every_parameter():
    layer = MIPTLayer(6, 4, readout="proj", phase="static")
    layer(torch.randn(2, 9, 6)).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kwargs,match", [
    (dict(d_model=0), "d_model"),
    (dict(d_model=8, d_state=4), "d_state .* must equal"),
    (dict(d_model=8, phase="dynamic"), "phase"),
    (dict(d_model=8, readout="abs"), "readout"),
    (dict(d_model=8, scan_method="warp"), "unknown scan method"),
    (dict(d_model=8, p_init=(0.5, 0.1)), "p_init"),
])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MIPTLayer(**kwargs)


def test_bad_calls():
    layer = MIPTLayer(8)
    with pytest.raises(ValueError, match="d_model=8"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"\(B, L, d_model\)"):
        layer(torch.randn(5, 8))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.randn(2, 0, 8))
    with pytest.raises(ValueError, match="init_state"):
        layer.step(torch.randn(2, 8), torch.zeros(3, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="batch_size"):
        layer.init_state(0)


@pytest.mark.skipif(interpreting(), reason="under the interpreter the CPU runs the fused mixer")
@pytest.mark.parametrize("autocast", [True, False])
def test_fused_flag_falls_back_without_triton_on_cpu(autocast):
    """On the CPU "triton" is unavailable: fused_mixer=True gives the split path's output and
    gradients bit for bit (with and without bf16 autocast)."""
    torch.manual_seed(0)
    x = torch.randn(2, 13, 16)
    ys, grads = [], []
    state = MIPTLayer(16).state_dict()
    for fused in (False, True):
        layer = MIPTLayer(16, fused_mixer=fused)
        layer.load_state_dict(state)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = layer(x)
        y.square().mean().backward()
        ys.append(y)
        grads.append([q.grad for q in layer.parameters()])
    assert torch.equal(ys[0], ys[1])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_fused_path_only_where_it_applies(monkeypatch):
    """With the mixer reported available, the fused path is taken only for a bf16/fp16 projection,
    readout "real", phase "input", scan_method "auto"/"triton"; return_aux keeps the split path."""
    import minimipt.ops.triton as K

    monkeypatch.setattr(K, "mixer_available", lambda dev: True)
    bf = torch.zeros(1, 2, 32, dtype=torch.bfloat16)
    assert MIPTLayer(8, fused_mixer=True)._use_fused(bf)
    assert MIPTLayer(8, fused_mixer=True)._use_fused(bf.half())
    assert MIPTLayer(8, fused_mixer=True, scan_method="triton")._use_fused(bf)
    assert not MIPTLayer(8)._use_fused(bf)
    assert not MIPTLayer(8, fused_mixer=True)._use_fused(bf.float())
    assert not MIPTLayer(8, fused_mixer=True, scan_method="chunked")._use_fused(bf)
    assert not MIPTLayer(8, fused_mixer=True, readout="proj")._use_fused(bf)
    assert not MIPTLayer(8, fused_mixer=True, phase="static")._use_fused(bf[..., :24])
    # return_aux needs p and h: the split path, which runs on the CPU without Triton
    layer = MIPTLayer(8, fused_mixer=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, aux = layer(torch.randn(2, 5, 8), return_aux=True)
    assert aux.h.shape == (2, 5, 8) and type(y.grad_fn).__name__ != "TritonMixerBackward"


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
