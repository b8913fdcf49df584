"""mipt_scan's inputs: edge cases (extreme finite values, B = 0 or D = 0, conjugated views,
complex32), the value check and its device flag. The property tests are in test_scan_properties.py."""

from __future__ import annotations

import pytest
import torch

import minimipt.ops.scan as scan_module
from minimipt import mipt_scan
from minimipt.ops import register_scan_method, scan_sequential
from minimipt.ops.checks import check_scan_values, flag_invalid_values
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


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
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
# GPU: the value check on CUDA (where "auto" is the Triton kernel)
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
        ref = scan_sequential(*(x.cpu() for x in (p, theta, u, h0)))
        torch.testing.assert_close(mipt_scan(p, theta, u, h0).cpu(), ref, rtol=1e-5, atol=1e-5 * 3e38)
    else:
        with pytest.raises(ValueError, match=f"^{name} "):
            mipt_scan(p, theta, u, h0)
