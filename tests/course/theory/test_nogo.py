"""minimipt.course.theory.nogo (notebook 01): the memory kernel of a linear time-invariant recurrence,
the gain range, the retention/precision trade-off, fixed operators' recall and selective copying:
hand-checkable values, theory against measurement, and input validation."""

from __future__ import annotations

import math

import pytest
import torch

import minimipt
from minimipt.course import theory as T


def test_lti_memory_kernel_values_and_impulse_response():
    assert torch.allclose(T.lti_memory_kernel(0.5, 4), torch.tensor([1, 0.5, 0.25, 0.125], dtype=torch.float64))
    lam = 0.5 * complex(0.6, 0.8)  # |lam| = 0.5, with a rotation
    assert torch.allclose(T.lti_memory_kernel(lam, 4), T.lti_memory_kernel(0.5, 4))
    lams = torch.tensor([0.9, 1.0, 0.0])
    ker = T.lti_memory_kernel(lams, 5)
    assert ker.shape == (3, 5) and torch.all(ker[1] == 1) and ker[2, 0] == 1 and torch.all(ker[2, 1:] == 0)
    # the kernel is the impulse response of h_t = lam h_{t-1} + u_t
    h, resp = 0j, []
    for t in range(6):
        h = lam * h + (1.0 if t == 0 else 0.0)
        resp.append(abs(h))
    assert torch.allclose(T.lti_memory_kernel(lam, 6), torch.tensor(resp, dtype=torch.float64))


def test_lti_memory_kernel_rejects_bad_input():
    with pytest.raises(ValueError, match="K"):
        T.lti_memory_kernel(0.5, 0)
    with pytest.raises(ValueError, match="lam"):
        T.lti_memory_kernel(torch.ones(2, 2), 3)


def test_gain_range_and_isometry_claim():
    g = torch.Generator().manual_seed(0)
    Z = torch.complex(torch.randn(6, 6, generator=g), torch.randn(6, 6, generator=g))
    U, _ = torch.linalg.qr(Z)  # a unitary matrix
    lo, hi = T.gain_range(U)
    assert lo == pytest.approx(1, abs=1e-6) and hi == pytest.approx(1, abs=1e-6) and T.is_isometry(U)
    # an isometry shrinks nothing: every sampled gain is 1
    h = torch.complex(torch.randn(500, 6, generator=g), torch.randn(500, 6, generator=g)).to(U.dtype)
    gains = (h @ U.T).norm(dim=-1) / h.norm(dim=-1)
    assert torch.allclose(gains, torch.ones_like(gains), atol=1e-5)
    # a contraction that shrinks one direction is not an isometry, and the gain range says so
    A = torch.diag(torch.tensor([1.0, 1.0, 0.01], dtype=torch.complex64))
    assert T.gain_range(A) == pytest.approx((0.01, 1.0), rel=1e-5) and not T.is_isometry(A)
    # the range bounds every sampled gain of a random operator
    lo, hi = T.gain_range(Z)
    hz = torch.complex(torch.randn(500, 6, generator=g), torch.randn(500, 6, generator=g))
    gz = (hz @ Z.T).norm(dim=-1) / hz.norm(dim=-1)
    assert lo - 1e-5 <= float(gz.min()) and float(gz.max()) <= hi + 1e-5
    with pytest.raises(ValueError, match="square"):
        T.gain_range(torch.ones(2, 3))


def test_copy_recall_tradeoff_fixed_operators_trade_gate_gets_both():
    r = T.copy_recall_tradeoff([0.0, 0.5, 0.8, 0.9, 0.95, 0.99], k=4, D=32, L=24, V=64, trials=64, seed=1)
    assert r["current"][0] == 1.0  # |lambda| = 0: the state is the current token
    assert r["recall"][0] < 0.1  # ... and the old token is gone
    assert r["current"][-1] < r["current"][0] and max(r["recall"]) > r["recall"][0] + 0.2  # the trade-off
    assert not any(a >= 0.9 and c >= 0.9 for a, c in zip(r["recall"], r["current"]))
    assert r["gate_recall"] == 1.0 and r["gate_current"] == 1.0


def test_copy_recall_tradeoff_rejects_bad_input():
    with pytest.raises(ValueError, match="k=8"):
        T.copy_recall_tradeoff([0.5], k=8, L=8)
    with pytest.raises(ValueError, match="decays"):
        T.copy_recall_tradeoff([1.0])
    with pytest.raises(ValueError, match="seed"):
        T.copy_recall_tradeoff([0.5], seed=-1)


def _unitary(D, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.complex(torch.randn(D, D, generator=g), torch.randn(D, D, generator=g)).to(torch.complex128))[0]


def test_operator_columns_are_the_unrolled_recurrence():
    """h_{L-1} = sum_s M_s z_s: the columns reproduce a loop over h_t = A h_{t-1} + B z_t."""
    g = torch.Generator().manual_seed(0)
    D, m, L = 4, 2, 7
    A = torch.complex(torch.randn(D, D, generator=g), torch.randn(D, D, generator=g)).to(torch.complex128) / 2
    B = torch.complex(torch.randn(D, m, generator=g), torch.randn(D, m, generator=g)).to(torch.complex128)
    z = torch.complex(torch.randn(L, m, generator=g), torch.randn(L, m, generator=g)).to(torch.complex128)
    h = torch.zeros(D, dtype=torch.complex128)
    for t in range(L):
        h = A @ h + B @ z[t]
    M = T.operator_columns(A, B, L)
    assert M.shape == (L, D, m)
    assert torch.allclose(torch.einsum("sdm,sm->d", M, z), h, atol=1e-12)
    assert torch.allclose(M[-1], B) and torch.allclose(M[0], torch.linalg.matrix_power(A, L - 1) @ B)
    with pytest.raises(ValueError, match="B must"):
        T.operator_columns(A, torch.ones(D + 1), L)


@pytest.mark.parametrize("m", [1, 2])
def test_fixed_operator_recall_bound_and_equality(m):
    D, L = 8, 40
    g = torch.Generator().manual_seed(m)
    B = torch.complex(torch.randn(D, m, generator=g), torch.randn(D, m, generator=g)).to(torch.complex128)
    r2 = T.fixed_operator_recall(_unitary(D, m), B, L)
    assert float(r2.sum()) * m == pytest.approx(D, abs=1e-6)  # sum_s m R2_s = rank = D
    assert float(r2.mean()) == pytest.approx(D / (L * m), abs=1e-8)
    noisy = T.fixed_operator_recall(_unitary(D, m), B, L, noise=0.1)
    assert float(noisy.mean()) < D / (L * m) and bool((noisy >= 0).all() and (noisy <= 1).all())
    # any operator, any decay: never above the bound
    for p in (0.01, 0.3, 0.9):
        A, Bp = T.mipt_operator(p, 2 * math.pi * torch.rand(D, generator=g, dtype=torch.float64),
                                T.random_phase_keys(1, D, seed=3)[0])
        assert float(T.fixed_operator_recall(A, Bp, L, noise=1e-3).mean()) <= D / L + 1e-9


def test_fixed_operator_recall_of_a_delay_line_and_of_few_tokens():
    D, L = 5, 12
    A = torch.diag(torch.ones(D - 1, dtype=torch.complex128), -1)
    B = torch.zeros(D, dtype=torch.complex128)
    B[0] = 1
    assert torch.equal(T.fixed_operator_recall(A, B, L).round(decimals=8), (torch.arange(L) >= L - D).double())
    assert torch.allclose(T.fixed_operator_recall(_unitary(6, 0), torch.ones(6), 4), torch.ones(4, dtype=torch.float64))


def test_mipt_operator_is_the_constant_gate_scan():
    D, L, p = 6, 9, 0.2
    g = torch.Generator().manual_seed(1)
    theta = 2 * math.pi * torch.rand(D, generator=g, dtype=torch.float64)
    b = T.random_phase_keys(1, D, seed=1)[0].to(torch.complex128)
    z = torch.complex(torch.randn(L, generator=g, dtype=torch.float64), torch.randn(L, generator=g, dtype=torch.float64))
    h = minimipt.mipt_scan(torch.full((1, L, D), p, dtype=torch.float64), theta.expand(1, L, D), (z[:, None] * b)[None],
                           method="sequential")[0, -1]
    A, B = T.mipt_operator(p, theta, b)
    assert torch.allclose(torch.einsum("sd,s->d", T.operator_columns(A, B, L)[..., 0], z), h, atol=1e-12)
    with pytest.raises(ValueError, match="p must"):
        T.mipt_operator(1.5, theta, b)


def test_selective_copy_measured_agrees_with_theory_and_the_gate_is_exact():
    r = T.selective_copy(L=48, D=12, ps=[0.003, 0.4], trials=2048, noise=1e-3, seed=0)
    assert r["bound"] == pytest.approx(12 / 48)
    for meas, pred in zip(r["recall"], r["theory"]):
        assert meas == pytest.approx(pred, abs=0.05) and pred <= r["bound"] + 1e-9
    assert r["theory"][1] < r["theory"][0]  # a fast-forgetting gate loses old tokens to the noise floor
    assert r["gate_recall"] == pytest.approx(r["gate_theory"], abs=1e-4) and r["gate_recall"] > 0.999
    short = T.selective_copy(L=6, D=12, ps=[0.01], trials=256, noise=1e-3, seed=1)
    assert short["bound"] == 1.0 and short["recall"][0] > 0.99  # L <= D: a fixed operator can hold every token
    with pytest.raises(ValueError, match="ps"):
        T.selective_copy(L=4, D=4, ps=[0.0])