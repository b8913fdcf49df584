"""MIPTLayer: step == forward, options, parameter storage, errors, param groups."""

from __future__ import annotations

import pytest
import torch

from minimipt import MIPTLayer, param_groups
from minimipt.ops import scan_sequential


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


def test_param_groups_split(capsys):
    layer = MIPTLayer(8, phase="static")
    groups = param_groups(layer, 0.1)
    assert "weight decay 0.1" in capsys.readouterr().out
    decay = {id(p) for p in groups[0]["params"]}
    assert id(layer.in_proj.weight) in decay
    assert id(layer.theta) not in decay and id(layer.in_proj.bias) not in decay
    assert groups[1]["weight_decay"] == 0.0
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in layer.parameters())
    with pytest.raises(ValueError):
        param_groups(layer, -1.0)
