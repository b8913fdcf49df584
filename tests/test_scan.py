"""mipt_scan: every method equals the sequential definition (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from minimipt import mipt_scan, scan_methods
from minimipt.scan import register_scan_method, resolve_method, _REGISTRY

CPU_METHODS = [m for m in scan_methods() if m != "sequential" and _REGISTRY[m].available(torch.device("cpu"))]
REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64}


def make_inputs(B, L, D, mode, cdtype, seed=0, h0=True):
    g = torch.Generator().manual_seed(seed)
    real = REAL[cdtype]
    if mode == "random":
        p = torch.rand(B, L, D, generator=g, dtype=real)
    elif mode == "near0":
        p = torch.full((B, L, D), 1e-6, dtype=real)
    elif mode == "near1":
        p = torch.full((B, L, D), 1 - 1e-6, dtype=real)
    elif mode == "mixed":
        pick = torch.rand(B, L, D, generator=g) < 0.5
        p = torch.where(pick, torch.tensor(1e-6, dtype=real), torch.tensor(1 - 1e-6, dtype=real))
    else:
        raise AssertionError(mode)
    theta = 3 * torch.randn(B, L, D, generator=g, dtype=real)
    u = torch.randn(B, L, D, generator=g, dtype=cdtype)
    h = torch.randn(B, D, generator=g, dtype=cdtype) if h0 else None
    return p, theta, u, h


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("method", CPU_METHODS)
@pytest.mark.parametrize("cdtype,tol", [(torch.complex128, 1e-10), (torch.complex64, 1e-5)])
@pytest.mark.parametrize("L", [1, 7, 64, 1000])
@pytest.mark.parametrize("mode", ["random", "near0", "near1", "mixed"])
def test_values_and_gradients_match_sequential(method, cdtype, tol, L, mode):
    inputs = make_inputs(2, L, 3, mode, cdtype, seed=L)
    ref_in = [x.clone().requires_grad_() for x in inputs]
    new_in = [x.clone().requires_grad_() for x in inputs]
    ref = mipt_scan(*ref_in, method="sequential")
    out = mipt_scan(*new_in, method=method)
    assert out.dtype == cdtype and out.shape == ref.shape
    assert rel(out, ref) < tol
    w = torch.randn(ref.shape, dtype=cdtype, generator=torch.Generator().manual_seed(1))
    (ref * w.conj()).real.sum().backward()
    (out * w.conj()).real.sum().backward()
    for name, a, b in zip(("p", "theta", "u", "h0"), new_in, ref_in):
        assert rel(a.grad, b.grad) < 10 * tol, f"gradient of {name}"


@pytest.mark.parametrize("method", ["sequential"] + CPU_METHODS)
def test_gradcheck_float64(method):
    p, theta, u, h0 = make_inputs(2, 5, 3, "random", torch.complex128, seed=3)
    p = p.clamp(0.05, 0.95)  # keep finite differences inside [0, 1]
    args = [x.clone().requires_grad_() for x in (p, theta, u, h0)]
    assert torch.autograd.gradcheck(lambda *a: mipt_scan(*a, method=method), args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["sequential"] + CPU_METHODS)
def test_limits_hold_exactly(method):
    B, L, D = 2, 50, 4
    theta = torch.randn(B, L, D, dtype=torch.float64)
    u = torch.randn(B, L, D, dtype=torch.complex128)
    h0 = torch.randn(B, D, dtype=torch.complex128)
    # p ≡ 0: pure rotation; the modulus never changes and the phase is the running sum of θ
    h = mipt_scan(torch.zeros(B, L, D, dtype=torch.float64), theta, u, h0, method=method)
    torch.testing.assert_close(h.abs(), h0.abs()[:, None].expand(B, L, D), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h0[:, None] * torch.polar(torch.ones_like(theta), theta.cumsum(1)),
                               rtol=1e-10, atol=1e-10)
    # p ≡ 1: the state collapses onto the current token
    h = mipt_scan(torch.ones(B, L, D, dtype=torch.float64), theta, u, h0, method=method)
    torch.testing.assert_close(h, u, rtol=0, atol=1e-15)


@pytest.mark.parametrize("method", CPU_METHODS)
def test_long_sequence_float32_is_stable(method):
    """L = 65,536 in float32: finite and within 1e-4 of a float64 run."""
    B, L, D = 1, 65_536, 4
    g = torch.Generator().manual_seed(0)
    p = torch.rand(B, L, D, generator=g, dtype=torch.float64) ** 4  # many near-0 rates: long memory
    p[:, ::997] = 1 - 1e-6
    theta = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    u = torch.randn(B, L, D, generator=g, dtype=torch.complex128)
    ref = mipt_scan(p, theta, u, method=method)
    out = mipt_scan(p.float(), theta.float(), u.to(torch.complex64), method=method)
    assert torch.isfinite(torch.view_as_real(out)).all()
    assert rel(out.to(torch.complex128), ref) < 1e-4


def test_h0_none_means_zeros():
    p, theta, u, h0 = make_inputs(2, 9, 3, "random", torch.complex128)
    for method in ["sequential"] + CPU_METHODS:
        torch.testing.assert_close(mipt_scan(p, theta, u, None, method=method),
                                   mipt_scan(p, theta, u, torch.zeros_like(h0), method=method))


def test_auto_and_registry():
    assert resolve_method("auto", torch.device("cpu")) in CPU_METHODS + ["sequential"]
    with pytest.raises(ValueError, match="unknown scan method"):
        mipt_scan(*make_inputs(1, 3, 2, "random", torch.complex64), method="nope")
    calls = []

    def traced(p, theta, u, h0):
        calls.append(p.shape)
        return _REGISTRY["sequential"].fn(p, theta, u, h0)

    register_scan_method("_test_traced", traced, available=lambda d: False, priority=-1)
    try:
        with pytest.raises(ValueError, match="not available"):
            mipt_scan(*make_inputs(1, 3, 2, "random", torch.complex64), method="_test_traced")
        register_scan_method("_test_traced", traced, priority=-1)
        mipt_scan(*make_inputs(1, 3, 2, "random", torch.complex64), method="_test_traced")
        assert calls == [(1, 3, 2)]
    finally:
        _REGISTRY.pop("_test_traced")


def _bad(name, **overrides):
    p, theta, u, h0 = make_inputs(2, 4, 3, "random", torch.complex64)
    args = dict(p=p, theta=theta, u=u, h0=h0)
    args.update(overrides)
    return name, args


@pytest.mark.parametrize("case", [
    _bad("p must have shape", p=torch.rand(2, 4)),
    _bad("same shape", theta=torch.rand(2, 5, 3)),
    _bad("u must be complex", u=torch.randn(2, 4, 3)),
    _bad("p must be a real floating", p=torch.rand(2, 4, 3, dtype=torch.complex64)),
    _bad("p must lie in", p=torch.full((2, 4, 3), 1.5)),
    _bad("p must lie in", p=-torch.rand(2, 4, 3) - 0.1),
    _bad("p of shape .* NaN", p=torch.full((2, 4, 3), float("nan"))),
    _bad("theta of shape .* NaN", theta=torch.full((2, 4, 3), float("inf"))),
    _bad("u of shape .* NaN", u=torch.full((2, 4, 3), complex(float("nan"), 0.0))),
    _bad("h0 must be a complex tensor of shape", h0=torch.zeros(2, 4, dtype=torch.complex64)),
    _bad("h0 must be a complex tensor of shape", h0=torch.zeros(2, 3)),
    _bad("empty", p=torch.rand(2, 0, 3), theta=torch.rand(2, 0, 3), u=torch.randn(2, 0, 3, dtype=torch.complex64)),
], ids=lambda c: c[0].split()[0] + "-" + "-".join(c[0].split()[1:3]))
def test_bad_inputs_raise_value_error(case):
    match, args = case
    with pytest.raises(ValueError, match=match):
        mipt_scan(**args)


@pytest.mark.parametrize("method", ["sequential"] + CPU_METHODS)
def test_gradient_of_p_at_exactly_one(method):
    """p = 1 is legal: dL/dp_t = Re(conj(g_t) (u_t − e^{iθ_t} h_{t−1})) must hold there too."""
    g = torch.Generator().manual_seed(5)
    B, L, D = 2, 6, 3
    p = torch.ones(B, L, D, dtype=torch.float64, requires_grad=True)
    theta = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    u = torch.randn(B, L, D, generator=g, dtype=torch.complex128)
    h0 = torch.randn(B, D, generator=g, dtype=torch.complex128)
    h = mipt_scan(p, theta, u, h0, method=method)
    (grad,) = torch.autograd.grad(h.real.sum(), p)
    h_prev = torch.cat([h0[:, None], h.detach()[:, :-1]], 1)
    expected = (u - torch.polar(torch.ones_like(theta), theta) * h_prev).real  # g_t = 1 since a_{t+1} = 0
    torch.testing.assert_close(grad, expected)
