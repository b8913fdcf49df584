"""The input checks of mipt_scan (minimipt.ops.checks): the structure (a ValueError naming the
argument), the values (extreme finite values are not NaN or inf; complex32 is refused with the fix),
and the device flag that agrees with the check. The scan's property tests are in test_scan.py.
"""

from __future__ import annotations

import pytest
import torch

from minimipt import mipt_scan
from minimipt.ops import scan_sequential
from minimipt.ops.checks import check_scan_values, flag_invalid_values
from tests._support import close_to, make_inputs, needs_cuda, scan_inputs


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


@pytest.mark.parametrize("method", ["auto", "sequential", "chunked", "closed_form"])
def test_extreme_finite_values_are_not_nan_or_inf(method):
    """u up to 3e38 and θ up to 1e38 in float32 are finite: the check must not call them inf (a sum
    over them would overflow) and the result equals the definition's, with p exactly 0 and 1."""
    p, theta, u, h0 = scan_inputs(2, 50, 3)
    u = u / u.abs().amax() * 3e38
    theta = theta * 1e37
    p[:, ::7] = 0.0
    p[:, 3::7] = 1.0
    h = mipt_scan(p, theta, u, h0, method=method)
    assert torch.isfinite(torch.view_as_real(h)).all()
    assert close_to(h, scan_sequential(p, theta, u, h0), 3e38)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_complex32_is_refused_with_the_fix():
    p, theta, u, h0 = scan_inputs()
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
    p, theta, u, h0 = scan_inputs()
    bad(p, theta, u, h0)
    flag = torch.zeros(1, dtype=torch.int32)
    flag_invalid_values(p, theta, u, h0, flag)
    assert flag.item() == (name is not None)
    if name is None:
        check_scan_values(p, theta, u, h0)
    else:
        with pytest.raises(ValueError, match=f"^{name} "):
            check_scan_values(p, theta, u, h0)


# ---------------------------------------------------------------------------------------------
# GPU: the value check on CUDA (where "auto" is the Triton kernel)
# ---------------------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("case", range(6))
def test_value_check_on_cuda(case):
    p, theta, u, h0 = (x.cuda() for x in scan_inputs())
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
