"""mipt_scan: every method equals the sequential definition (values and gradients)."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from minimipt import mipt_scan, scan_methods
from minimipt.ops import linear_scan, register_scan_method, resolve_method, scan_chunked, scan_sequential
from minimipt.ops.scan import _REGISTRY

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


@pytest.mark.parametrize("chunk", [2, 3, 5, 64])
@pytest.mark.parametrize("L", [1, 9, 10, 100, 333])
def test_chunked_any_chunk_length(chunk, L):
    """Every chunk length, with and without a tail, short sequences (the loop) and carries long
    enough to be chunked themselves (chunk 2, L 100: 50 chunks, a chunked carry)."""
    inputs = make_inputs(2, L, 3, "random", torch.complex128, seed=chunk + L)
    ref_in = [x.clone().requires_grad_() for x in inputs]
    new_in = [x.clone().requires_grad_() for x in inputs]
    ref = mipt_scan(*ref_in, method="sequential")
    out = scan_chunked(*new_in, chunk=chunk)
    assert rel(out, ref) < 1e-12
    w = torch.randn(ref.shape, dtype=ref.dtype, generator=torch.Generator().manual_seed(2))
    (ref * w.conj()).real.sum().backward()
    (out * w.conj()).real.sum().backward()
    for name, a, b in zip(("p", "theta", "u", "h0"), new_in, ref_in):
        assert rel(a.grad, b.grad) < 1e-11, f"gradient of {name}"


@pytest.mark.parametrize("chunk", [0, 1, 2.5, True])
def test_chunked_rejects_bad_chunk(chunk):
    with pytest.raises(ValueError, match="chunk must be an int"):
        scan_chunked(*make_inputs(1, 8, 2, "random", torch.complex64), chunk=chunk)


def test_chunked_non_contiguous_inputs():
    p, theta, u, h0 = make_inputs(2, 80, 6, "random", torch.complex128)
    sl = (slice(None), slice(3, 75), slice(0, 6, 2))  # gaps in L and D
    ref = mipt_scan(p[sl], theta[sl], u[sl], h0[:, ::2], method="sequential")
    assert rel(scan_chunked(p[sl], theta[sl], u[sl], h0[:, ::2], chunk=8), ref) < 1e-12
    tr = [x.transpose(0, 1).contiguous().transpose(0, 1) for x in (p, theta, u)]  # other memory order
    assert rel(scan_chunked(*tr, h0, chunk=8), mipt_scan(p, theta, u, h0, method="sequential")) < 1e-12


@pytest.mark.parametrize("h0", [True, False])
def test_linear_scan_matches_loop(h0):
    """The generic h_t = a_t h_{t-1} + b_t solver: values and gradients in a, b, h0."""
    g = torch.Generator().manual_seed(4)
    B, L, D = 2, 77, 3
    a = torch.polar(torch.rand(B, L, D, generator=g, dtype=torch.float64),
                    torch.randn(B, L, D, generator=g, dtype=torch.float64)).requires_grad_()
    b = torch.randn(B, L, D, generator=g, dtype=torch.complex128, requires_grad=True)
    h_init = torch.randn(B, D, generator=g, dtype=torch.complex128, requires_grad=True) if h0 else None
    leaves = [x for x in (a, b, h_init) if x is not None]
    state, states = (h_init if h0 else torch.zeros(B, D, dtype=b.dtype)), []
    for t in range(L):
        state = a[:, t] * state + b[:, t]
        states.append(state)
    ref = torch.stack(states, 1)
    out = linear_scan(a, b, h_init, chunk=8)
    assert rel(out, ref) < 1e-12
    w = torch.randn(B, L, D, generator=g, dtype=torch.complex128)
    g_ref = torch.autograd.grad((ref * w.conj()).real.sum(), leaves)
    g_out = torch.autograd.grad((out * w.conj()).real.sum(), leaves)
    for x, y in zip(g_out, g_ref):
        assert rel(x, y) < 1e-12
    assert torch.autograd.gradcheck(lambda *x: linear_scan(*x, chunk=2),
                                    [x.detach()[:, :7].clone().requires_grad_() if x.dim() == 3 else
                                     x.detach().clone().requires_grad_() for x in leaves])


class _PeakBytes(TorchDispatchMode):
    """Peak bytes held by the storages that aten ops allocate while the mode is active (a storage
    counts from the op that creates it until no tensor viewing it is alive)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[list, int]] = {}
        self.now = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is not None and all(ref() is None for ref in entry[0]):
            del self.live[key]
            self.now -= entry[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr():
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live:
                    self.live[key] = ([], storage.nbytes())
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                self.live[key][0].append(weakref.ref(t))
                weakref.finalize(t, self._release, key)
        return out


def _peak_extra_memory(method: str, B=2, L=1024, D=16) -> float:
    """Peak memory allocated by forward + backward, in units of one complex (B, L, D) tensor."""
    p, theta, u, _ = make_inputs(B, L, D, "random", torch.complex64, h0=False)
    leaves = [x.requires_grad_() for x in (p, theta, u)]
    with _PeakBytes() as meter:
        h = mipt_scan(*leaves, method=method, check_values=False)
        grads = torch.autograd.grad(h.real.sum(), leaves)
        del h, grads
    return meter.peak / (u.numel() * u.element_size())


def test_chunked_memory_is_a_few_copies_of_the_data():
    """"chunked" allocates O(B·L·D): a few full-size tensors (gate, input, h, the adjoint and the
    gradients), never C× the data. The meter sees the C×C matrices of "closed_form" (~C× blow-up)."""
    assert _peak_extra_memory("chunked") < 10
    assert _peak_extra_memory("closed_form") > 30


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
