"""mipt_scan's inputs: edge cases, the value check, and a property test over shapes, dtypes, memory
layouts and extreme values (every call returns the sequential definition's result or raises
ValueError, never another exception)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minimipt.ops.scan as scan_module
from minimipt import mipt_scan
from minimipt.ops import register_scan_method, scan_sequential
from minimipt.ops.checks import check_scan_values, flag_invalid_values, is_pairs, pairs_to_complex, state_real_dtype
from minimipt.ops.scan import _REGISTRY

REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64}


def _inputs(B=2, L=9, D=3, cdtype=torch.complex64, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = REAL[cdtype]
    return (torch.rand(B, L, D, generator=g, dtype=real), torch.randn(B, L, D, generator=g, dtype=real),
            torch.randn(B, L, D, generator=g, dtype=cdtype), torch.randn(B, D, generator=g, dtype=cdtype))


def _close(h, ref, scale):
    """``h`` equals ``ref`` to the precision of its dtype, relative to the inputs' magnitude ``scale``."""
    tol = 1e-10 if h.dtype == torch.complex128 else 2e-6
    return h.shape == ref.shape and h.dtype == ref.dtype and \
        bool(((h - ref).abs() <= tol * scale * (1 + torch.arange(h.shape[1]).view(1, -1, 1))).all())


@pytest.mark.parametrize("method", ["auto", "sequential", "chunked", "closed_form"])
def test_extreme_finite_values_are_not_nan_or_inf(method):
    """u up to 3e38 and θ up to 1e38 in float32 are finite: the check must not call them inf (a sum
    over them would overflow) and the result equals the definition's, with p exactly 0 and 1."""
    p, theta, u, h0 = _inputs(2, 50, 3)
    u = u / u.abs().amax() * 3e38
    theta = theta * 1e37
    p[:, ::7] = 0.0
    p[:, 3::7] = 1.0
    h = mipt_scan(p, theta, u, h0, method=method)
    assert torch.isfinite(torch.view_as_real(h)).all()
    assert _close(h, scan_sequential(p, theta, u, h0), 3e38)


@pytest.mark.parametrize("B,D", [(0, 3), (2, 0), (0, 0)])
@pytest.mark.parametrize("pairs", [False, True])
def test_empty_batch_or_channels_give_an_empty_differentiable_result(B, D, pairs):
    p, theta, u, h0 = (x.requires_grad_() for x in _inputs(B, 5, D))
    u_in = torch.view_as_real(u.detach()).requires_grad_() if pairs else u
    h = mipt_scan(p, theta, u_in, h0)
    assert h.shape == (B, 5, D) and h.dtype == torch.complex64
    grads = torch.autograd.grad(h.real.sum(), (p, theta, u_in, h0), allow_unused=True)
    assert all(g is None or g.shape == x.shape for g, x in zip(grads, (p, theta, u_in, h0)))


def test_conjugated_views_equal_their_resolved_values():
    p, theta, u, h0 = _inputs()
    u_view, h0_view = u.conj().clone().conj(), h0.conj().clone().conj()  # lazy conj views of u, h0
    assert u_view.is_conj() and h0_view.is_conj()
    for method in ("auto", "sequential", "chunked", "closed_form"):
        torch.testing.assert_close(mipt_scan(p, theta, u_view, h0_view, method=method),
                                   mipt_scan(p, theta, u, h0, method=method))


def test_complex32_is_refused_with_the_fix():
    p, theta, u, h0 = _inputs()
    with pytest.raises(ValueError, match="u has dtype complex32.*u.to\\(torch.complex64\\)"):
        mipt_scan(p, theta, u.to(torch.complex32))
    with pytest.raises(ValueError, match="h0 has dtype complex32"):
        mipt_scan(p, theta, u, h0.to(torch.complex32))


@pytest.mark.parametrize("name,bad", [
    ("p", lambda p, th, u, h0: p.__setitem__((0, 1, 2), float("nan"))),
    ("p", lambda p, th, u, h0: p.__setitem__((1, 0, 0), -1e-3)),
    ("theta", lambda p, th, u, h0: th.__setitem__((0, 3, 1), float("inf"))),
    ("u", lambda p, th, u, h0: u.__setitem__((1, 2, 0), complex(0.0, float("nan")))),
    ("h0", lambda p, th, u, h0: h0.__setitem__((1, 1), complex(float("-inf"), 0.0))),
    (None, lambda p, th, u, h0: u.mul_(3e38 / u.abs().amax())),
])
def test_flag_on_the_device_agrees_with_the_check(name, bad):
    p, theta, u, h0 = _inputs()
    bad(p, theta, u, h0)
    flag = torch.zeros(1, dtype=torch.int32)
    flag_invalid_values(p, theta, u, h0, flag)
    assert flag.item() == (name is not None)
    if name is None:
        check_scan_values(p, theta, u, h0)
    else:
        with pytest.raises(ValueError, match=f"^{name} "):
            check_scan_values(p, theta, u, h0)


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
        p, theta, u, h0 = _inputs()
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
# property test
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
    assert _close(h.detach(), ref.detach(), scale), (method, float((h - ref).abs().max()) / scale)
    leaves = [x for x in (p, theta, u, h0) if x is not None]
    grads = torch.autograd.grad(h.real.sum(), leaves, allow_unused=True)  # the backward runs too
    assert all(g is None or g.shape == x.shape for g, x in zip(grads, leaves))


# ---------------------------------------------------------------------------------------------
# GPU: the same on CUDA, where "auto" is the Triton kernel (float32 and bf16 only: every dtype
# combination is a separate kernel compilation)
# ---------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("case", range(6))
def test_value_check_on_cuda(case):
    p, theta, u, h0 = (x.cuda() for x in _inputs())
    name = [None, "p", "p", "theta", "u", "h0"][case]
    if case == 0:
        u = u / u.abs().amax() * 3e38  # finite: no error
    elif case == 1:
        p[0, 1, 2] = float("nan")
    elif case == 2:
        p[1, 0, 0] = 1.5
    elif case == 3:
        theta[0, 3, 1] = float("-inf")
    elif case == 4:
        u[1, 2, 0] = complex(float("nan"), 0.0)
    else:
        h0[1, 1] = complex(0.0, float("inf"))
    flag = torch.zeros(1, dtype=torch.int32, device="cuda")
    flag_invalid_values(p, theta, u, h0, flag)
    assert flag.item() == (name is not None)
    if name is None:
        torch.testing.assert_close(mipt_scan(p, theta, u, h0).cpu(), scan_sequential(*(x.cpu() for x in (p, theta, u, h0))),
                                   rtol=1e-5, atol=1e-5 * 3e38)
    else:
        with pytest.raises(ValueError, match=f"^{name} "):
            mipt_scan(p, theta, u, h0)


@st.composite
def cuda_scan_calls(draw):
    B, L, D = draw(st.integers(0, 3)), draw(st.integers(1, 40)), draw(st.integers(0, 9))
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
    assert _close(h.cpu().to(torch.complex128), ref, scale * 1e4), float((h.cpu() - ref).abs().max()) / scale
