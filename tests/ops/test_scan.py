"""mipt_scan, the entry point: every registered method equals the sequential definition (values and
gradients, the limits p = 0 and p = 1, long float32 sequences, u as real pairs); the registry and
"auto"; empty and conjugated inputs; methods that check the values themselves. Then property tests
(hypothesis): over shapes (0-sized included), dtypes, memory layouts (non-contiguous, batch-major,
expanded, conjugated views) and extreme finite values, every call returns the sequential definition's
result or raises ValueError — never another exception.

The methods' own tests are in test_chunked.py and triton/test_scan.py, the input checks in test_checks.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minimipt.ops.scan as scan_module
from minimipt import mipt_scan, scan_methods
from minimipt.ops import register_scan_method, resolve_method, scan_sequential
from minimipt.ops.checks import check_scan_values, flag_invalid_values, is_pairs, pairs_to_complex, state_real_dtype
from minimipt.ops.scan import _REGISTRY
from tests._support import REAL, close_to, make_inputs, needs_cuda, rel, scan_inputs


CPU_METHODS = [m for m in scan_methods() if m != "sequential" and _REGISTRY[m].available(torch.device("cpu"))]


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


@pytest.mark.parametrize("method", ["sequential"] + CPU_METHODS)
def test_u_as_real_pairs_equals_complex_u(method):
    """u may come as real (re, im) pairs (B, L, D, 2), as the layer passes it under bf16 autocast:
    methods that cannot read pairs get it widened to complex, values and gradients unchanged."""
    p, theta, u, h0 = make_inputs(2, 37, 5, "random", torch.complex64)
    pairs = torch.view_as_real(u).bfloat16().requires_grad_()
    wide = torch.view_as_complex(pairs.detach().float()).requires_grad_()
    h_pairs = mipt_scan(p, theta, pairs, h0, method=method)
    h_wide = mipt_scan(p, theta, wide, h0, method=method)
    torch.testing.assert_close(h_pairs, h_wide, rtol=0, atol=0)
    w = torch.randn(h_wide.shape, dtype=h_wide.dtype, generator=torch.Generator().manual_seed(1))
    (h_pairs * w.conj()).real.sum().backward()
    (h_wide * w.conj()).real.sum().backward()
    assert pairs.grad.dtype == torch.bfloat16
    torch.testing.assert_close(pairs.grad.float(), torch.view_as_real(wide.grad).bfloat16().float())


def test_a_pairs_method_receives_the_pairs():
    seen = []

    def fn(p, theta, u, h0):
        seen.append(tuple(u.shape))
        return scan_sequential(p, theta, torch.view_as_complex(u.float().contiguous()), h0)

    register_scan_method("_test_pairs", fn, pairs=True)
    try:
        p, theta, u, _ = make_inputs(1, 4, 3, "random", torch.complex64)
        mipt_scan(p, theta, torch.view_as_real(u), method="_test_pairs")
        assert seen == [(1, 4, 3, 2)]
    finally:
        _REGISTRY.pop("_test_pairs")


@pytest.mark.parametrize("B,D", [(0, 3), (2, 0), (0, 0)])
@pytest.mark.parametrize("pairs", [False, True])
def test_empty_batch_or_channels_give_an_empty_differentiable_result(B, D, pairs):
    p, theta, u, h0 = (x.requires_grad_() for x in scan_inputs(B, 5, D))
    u_in = torch.view_as_real(u.detach()).requires_grad_() if pairs else u
    h = mipt_scan(p, theta, u_in, h0)
    assert h.shape == (B, 5, D) and h.dtype == torch.complex64
    grads = torch.autograd.grad(h.real.sum(), (p, theta, u_in, h0), allow_unused=True)
    assert all(g is None or g.shape == x.shape for g, x in zip(grads, (p, theta, u_in, h0)))


def test_conjugated_views_equal_their_resolved_values():
    p, theta, u, h0 = scan_inputs()
    u_view, h0_view = u.conj().clone().conj(), h0.conj().clone().conj()  # lazy conj views of u, h0
    assert u_view.is_conj() and h0_view.is_conj()
    for method in ("auto", "sequential", "chunked", "closed_form"):
        torch.testing.assert_close(mipt_scan(p, theta, u_view, h0_view, method=method),
                                   mipt_scan(p, theta, u, h0, method=method))


def test_a_method_that_checks_values_replaces_the_separate_pass(monkeypatch):
    """A ``checks_values`` method gets a zeroed flag; mipt_scan makes no pass of its own over valid
    inputs, words the error with the full check when the flag is raised, and calls a flag the
    check cannot confirm a bug in the method."""
    passes = []
    monkeypatch.setattr(scan_module, "check_scan_values", lambda *a: passes.append(1) or check_scan_values(*a))
    lie = []

    def checked(p, theta, u, h0, bad=None):
        if bad is None:  # check_values=False
            return scan_sequential(p, theta, u, h0)
        assert bad.dtype == torch.int32 and bad.item() == 0
        flag_invalid_values(p, theta, u, h0, bad)
        bad.fill_(bad.item() or bool(lie))
        return scan_sequential(p, theta, u, h0)

    register_scan_method("_test_checked", checked, checks_values=True)
    try:
        p, theta, u, h0 = scan_inputs()
        torch.testing.assert_close(mipt_scan(p, theta, u, h0, method="_test_checked"), scan_sequential(p, theta, u, h0))
        assert passes == []
        with pytest.raises(ValueError, match="p must lie in \\[0, 1\\]"):
            mipt_scan(p + 1, theta, u, h0, method="_test_checked")
        assert passes == [1]
        lie.append(1)
        with pytest.raises(RuntimeError, match="a bug in the method"):
            mipt_scan(p, theta, u, h0, method="_test_checked")
        mipt_scan(p + 1, theta, u, h0, method="_test_checked", check_values=False)  # no flag, no check
    finally:
        _REGISTRY.pop("_test_checked")


# ---------------------------------------------------------------------------------------------
# property tests (hypothesis)
# ---------------------------------------------------------------------------------------------

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


SPECIALS = ["none", "nan", "inf", "p_low", "p_high", "extreme"]


def _real(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(x.resolve_conj()).detach().double() if x.is_complex() else x.detach().double()


def _layout(x: torch.Tensor, how: str) -> torch.Tensor:
    """The same values in another memory layout."""
    if how == "permuted":  # batch-major storage
        return x.transpose(0, 1).contiguous().transpose(0, 1)
    if how == "strided":  # gaps between channels
        wide = torch.zeros(*x.shape[:2], 2 * x.shape[2], *x.shape[3:], dtype=x.dtype)
        wide[:, :, ::2] = x
        return wide[:, :, ::2]
    if how == "conj" and x.is_complex():
        return x.conj().clone().conj()
    return x


@st.composite
def scan_calls(draw):
    B, L, D = draw(st.integers(0, 3)), draw(st.integers(1, 12)), draw(st.integers(0, 4))
    p_dt, th_dt = draw(st.sampled_from(FLOATS)), draw(st.sampled_from(FLOATS))
    u_form = draw(st.sampled_from(["complex64", "complex128"] + [f"pairs-{i}" for i in range(4)]))
    h0_dt = draw(st.sampled_from([None, torch.complex64, torch.complex128]))
    layouts = [draw(st.sampled_from(["contiguous", "permuted", "strided", "conj", "expanded"])) for _ in range(4)]
    special, where = draw(st.sampled_from(SPECIALS)), draw(st.sampled_from(["p", "theta", "u", "h0"]))
    method = draw(st.sampled_from(["auto", "sequential", "chunked", "closed_form"]))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(B, L, D, generator=g, dtype=torch.float64)
    p[p < 0.1] = 0.0
    p[p > 0.9] = 1.0
    theta = 3 * torch.randn(B, L, D, generator=g, dtype=torch.float64)
    u = torch.randn(B, L, D, generator=g, dtype=torch.complex128)
    h0 = torch.randn(B, D, generator=g, dtype=torch.complex128)
    if special == "extreme":  # a quarter of the largest finite value of each dtype
        theta = theta.sign() * torch.finfo(th_dt).max / 4
        u_dt = torch.complex64 if u_form == "complex64" else torch.float64 if u_form == "complex128" \
            else FLOATS[int(u_form[-1])]
        u = u / u.abs().clamp_min(1e-30) * torch.finfo(REAL.get(u_dt, u_dt)).max / 4
    p, theta = p.to(p_dt), theta.to(th_dt)
    if u_form.startswith("pairs"):
        u = torch.view_as_real(u).to(FLOATS[int(u_form[-1])])
    else:
        u = u.to(getattr(torch, u_form))
    h0 = None if h0_dt is None else h0.to(h0_dt)
    if special in ("nan", "inf", "p_low", "p_high") and p.numel():
        target = {"p": p, "theta": theta, "u": u, "h0": h0}[where if special in ("nan", "inf") else "p"]
        if target is not None and target.numel():
            value = {"nan": float("nan"), "inf": float("inf"), "p_low": -0.25, "p_high": 1.5}[special]
            target.view(-1)[draw(st.integers(0, target.numel() - 1))] = value if not target.is_complex() \
                else complex(value, 0.0)
    if layouts[3] == "expanded" and B:
        p = p[:1].expand_as(p)
    p, theta, u = _layout(p, layouts[0]), _layout(theta, layouts[1]), _layout(u, layouts[2])
    h0 = None if h0 is None else _layout(h0[:, None], layouts[3])[:, 0]
    leaf = lambda x: None if x is None else x.detach().requires_grad_()  # noqa: E731 (views stay views)
    return leaf(p), leaf(theta), leaf(u), leaf(h0), method


@settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(scan_calls())
def test_every_call_returns_the_definition_or_raises_value_error(call):
    p, theta, u, h0, method = call
    try:
        h = mipt_scan(p, theta, u, h0, method=method)
    except ValueError:
        big = torch.finfo(state_real_dtype(u)).max  # θ, u, h0 must be finite in the state's dtype
        bad = any(not (_real(x).abs() <= big).all() for x in (theta, u, h0) if x is not None) \
            or not bool(((p >= 0) & (p <= 1)).all())
        assert bad, "ValueError for valid inputs"
        return
    uc = pairs_to_complex(u) if is_pairs(u) else u.resolve_conj()
    ref = scan_sequential(p, theta, uc, None if h0 is None else h0.resolve_conj())
    scale = max([1.0] + [float(_real(x).abs().amax()) for x in (uc, h0) if x is not None and x.numel()])
    assert close_to(h.detach(), ref.detach(), scale), (method, float((h - ref).abs().max()) / scale)
    leaves = [x for x in (p, theta, u, h0) if x is not None]
    grads = torch.autograd.grad(h.real.sum(), leaves, allow_unused=True)  # the backward runs too
    assert all(g is None or g.shape == x.shape for g, x in zip(grads, leaves))


# GPU: "auto" is the Triton kernel there (float32 and bf16 only: every dtype combination is a
# separate kernel compilation); values only

@st.composite
def cuda_scan_calls(draw):
    # lengths and widths that are neither 1 nor multiples of 16: Triton compiles a kernel per such class
    B, L, D = draw(st.integers(0, 3)), draw(st.sampled_from([2, 7, 15, 33, 77])), draw(st.sampled_from([0, 5, 9]))
    narrow = draw(st.booleans())
    layout = draw(st.sampled_from(["contiguous", "permuted", "strided", "conj"]))
    special = draw(st.sampled_from(["none", "none", "nan", "p_high", "extreme"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    p = torch.rand(B, L, D, generator=g)
    theta = 3 * torch.randn(B, L, D, generator=g)
    u = torch.randn(B, L, D, generator=g, dtype=torch.complex64)
    h0 = torch.randn(B, D, generator=g, dtype=torch.complex64) if draw(st.booleans()) else None
    if special == "extreme":
        u = u / u.abs().clamp_min(1e-30) * 8e37
    elif special != "none" and p.numel():
        p.view(-1)[draw(st.integers(0, p.numel() - 1))] = float("nan") if special == "nan" else 1.5
    u = torch.view_as_real(u).bfloat16() if narrow else _layout(u, layout)
    p, theta = _layout(p, layout), _layout(theta, layout)
    return [None if x is None else x.cuda() for x in (p, theta, u, h0)]


@pytest.mark.gpu
@needs_cuda
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(cuda_scan_calls())
def test_every_cuda_call_returns_the_definition_or_raises_value_error(call):
    p, theta, u, h0 = call
    try:
        h = mipt_scan(p, theta, u, h0)
    except ValueError:
        assert not (bool(((p >= 0) & (p <= 1)).all()) and bool(torch.isfinite(p).all()))
        return
    cpu = [None if x is None else x.cpu() for x in (p, theta, u, h0)]
    uc = pairs_to_complex(cpu[2]) if is_pairs(cpu[2]) else cpu[2].resolve_conj()
    ref = scan_sequential(cpu[0].double(), cpu[1].double(), uc.to(torch.complex128),
                          None if h0 is None else cpu[3].to(torch.complex128))
    scale = max([1.0] + [float(_real(x).abs().amax()) for x in (uc, cpu[3]) if x is not None and x.numel()])
    assert close_to(h.cpu().to(torch.complex128), ref, scale * 1e4), float((h.cpu() - ref).abs().max()) / scale
