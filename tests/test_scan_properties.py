"""Property tests of mipt_scan (hypothesis): over shapes (0-sized included), dtypes, memory layouts
(non-contiguous, batch-major, expanded, conjugated views) and extreme finite values, every call
returns the sequential definition's result or raises ValueError — never another exception."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from minimipt import mipt_scan  # noqa: E402
from minimipt.ops import scan_sequential  # noqa: E402
from minimipt.ops.checks import is_pairs, pairs_to_complex, state_real_dtype  # noqa: E402
from tests.test_scan_inputs import REAL, _close  # noqa: E402

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



# GPU: "auto" is the Triton kernel there (float32 and bf16 only: every dtype combination is a
# separate kernel compilation); values only

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


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
    assert _close(h.cpu().to(torch.complex128), ref, scale * 1e4), float((h.cpu() - ref).abs().max()) / scale
