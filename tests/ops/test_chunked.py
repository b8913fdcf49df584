"""The chunked scan (minimipt.ops.chunked): any chunk length against the sequential definition
(values and gradients), bad chunk lengths, non-contiguous inputs, the generic linear recurrence
solver, and memory of a few copies of the data."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from minimipt import mipt_scan
from minimipt.ops import linear_scan, scan_chunked
from tests._support import make_inputs, rel


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
