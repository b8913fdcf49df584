"""minimipt.course.theory: hand-checkable values, theory against measurement, and input validation."""

from __future__ import annotations

import math

import pytest
import torch

import minimipt
from minimipt.course import theory as T


# --- 1. the no-go argument -------------------------------------------------------------------

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


# --- 2. the wave phase -----------------------------------------------------------------------

def test_random_phase_keys_are_unit_and_seeded():
    k = T.random_phase_keys(5, 7, trials=3, seed=2)
    assert k.shape == (3, 5, 7) and k.is_complex()
    assert torch.allclose(k.abs(), torch.ones(3, 5, 7), atol=1e-6)
    assert torch.equal(k, T.random_phase_keys(5, 7, trials=3, seed=2))
    assert not torch.equal(k, T.random_phase_keys(5, 7, trials=3, seed=3))


def test_store_retrieve_exact_cases():
    keys = T.random_phase_keys(1, 8, seed=0)
    v = torch.tensor([0.3 - 2.0j])
    h = T.phase_memory_store(keys, v)
    assert torch.allclose(T.phase_memory_retrieve(h, keys), v, atol=1e-6)  # one item: no crosstalk
    keys = T.random_phase_keys(12, 16, trials=2, seed=0)
    v = torch.randn(2, 12, generator=torch.Generator().manual_seed(0)).to(torch.complex64)
    h = T.phase_memory_store(keys, v)
    assert torch.allclose(T.phase_memory_retrieve(h, keys, "complex_linear"), v, atol=1e-4)  # N <= D: exact
    assert not torch.allclose(T.phase_memory_retrieve(h, keys, "matched"), v, atol=1e-2)  # crosstalk
    with pytest.raises(ValueError, match="decoder"):
        T.phase_memory_retrieve(h, keys, "oracle")
    with pytest.raises(ValueError, match="values"):
        T.phase_memory_store(keys, v[:, :3])


def test_phase_memory_is_the_scan_at_small_p():
    """h_L / p of the MIPT recurrence with p -> 0 equals the superposition with rotation keys."""
    B, N, D, p = 2, 20, 16, 1e-4
    g = torch.Generator().manual_seed(0)
    v = torch.randint(2, (B, N), generator=g).float() * 2 - 1
    theta = 2 * math.pi * torch.rand(B, N, D, generator=g)
    u = v[..., None].expand(B, N, D).to(torch.complex64)
    h = minimipt.mipt_scan(torch.full((B, N, D), p), theta, u, method="sequential")[:, -1] / p
    direct = T.phase_memory_store(T.scan_phase_keys(theta), v)
    assert torch.allclose(h, direct, rtol=0, atol=5 * p * N * N)  # decay (1-p)^k differs by <= p k


@pytest.mark.parametrize("N", [8, 64, 256])
def test_phase_memory_theory_matches_measurement_matched(N):
    D = 64
    meas = T.phase_memory_accuracy(D, N, noise=0.5, trials=64, seed=0)
    pred = T.phase_memory_theory(D, N, noise=0.5)
    assert meas["quality"] == pytest.approx(pred["quality"], abs=0.04)
    assert meas["accuracy"] == pytest.approx(pred["accuracy"], abs=0.02)


@pytest.mark.parametrize("decoder,N,noise", [("complex_linear", 16, 0.0), ("complex_linear", 16, 0.5),
                                             ("complex_linear", 128, 0.0), ("complex_linear", 256, 0.5),
                                             ("real_linear", 32, 0.5), ("real_linear", 100, 0.5),
                                             ("real_linear", 192, 0.0), ("real_linear", 256, 0.5)])
def test_phase_memory_theory_matches_measurement_linear(decoder, N, noise):
    D = 64
    meas = T.phase_memory_accuracy(D, N, noise=noise, trials=32, seed=0, decoder=decoder)
    pred = T.phase_memory_theory(D, N, noise=noise, decoder=decoder)
    assert meas["quality"] == pytest.approx(pred["quality"], abs=0.04)
    assert meas["accuracy"] == pytest.approx(pred["accuracy"], abs=0.02)


@pytest.mark.parametrize("decoder", T.DECODERS)
@pytest.mark.parametrize("N", [32, 96, 192])
def test_phase_memory_theory_matches_measurement_complex_items(decoder, N):
    meas = T.phase_memory_accuracy(64, N, noise=0.5, trials=32, seed=1, decoder=decoder, items="complex")
    pred = T.phase_memory_theory(64, N, noise=0.5, decoder=decoder, items="complex")
    assert meas["quality"] == pytest.approx(pred["quality"], abs=0.04)
    assert meas["accuracy"] == pytest.approx(pred["accuracy"], abs=0.02)


def test_the_kink_is_at_d_for_complex_linear_and_2d_for_real_linear():
    """Real bits: a complex-linear decoder is exact up to N = D only, a real-linear one of [Re h, Im h] up to 2D."""
    D = 64
    for N, complex_exact, real_exact in ((64, True, True), (96, False, True), (128, False, True), (160, False, False)):
        c = T.phase_memory_accuracy(D, N, trials=4, seed=2, decoder="complex_linear")
        r = T.phase_memory_accuracy(D, N, trials=4, seed=2, decoder="real_linear")
        assert (c["quality"] > 0.9999) == complex_exact and (r["quality"] > 0.9999) == real_exact, (N, c, r)
    assert T.phase_memory_accuracy(D, 2 * D, trials=8, seed=0, decoder="real_linear")["accuracy"] == 1.0
    assert T.phase_memory_accuracy(D, 2 * D, trials=8, seed=0, decoder="complex_linear")["accuracy"] < 0.95
    # complex items: both linear decoders are the same decoder, exact up to N = D
    keys = T.random_phase_keys(80, D, trials=2, seed=3)
    v = torch.complex(torch.randn(2, 80), torch.randn(2, 80))
    h = T.phase_memory_store(keys, v)
    assert torch.allclose(T.phase_memory_retrieve(h, keys, "real_linear", "complex"),
                          T.phase_memory_retrieve(h, keys, "complex_linear"), atol=1e-4)
    for decoder in ("complex_linear", "real_linear"):
        assert T.phase_memory_theory(D, D, decoder=decoder, items="complex")["quality"] == 1.0
        assert T.phase_memory_theory(D, D + 1, decoder=decoder, items="complex")["quality"] < 1.0
    assert T.phase_memory_theory(D, 2 * D, decoder="real_linear")["quality"] == 1.0
    assert T.phase_memory_theory(D, 2 * D + 1, decoder="real_linear")["quality"] < 1.0


def test_phase_memory_transition_and_errors():
    D = 64
    below = T.phase_memory_theory(D, D // 2, 0.0, "complex_linear")["quality"]
    above = T.phase_memory_theory(D, 2 * D, 0.0, "complex_linear")["quality"]
    assert below == 1.0 and above == pytest.approx(0.5)
    assert T.phase_memory_theory(D, D + 1, 0.0)["quality"] == pytest.approx(0.5)  # SNR = 1 at N = D + 1
    with pytest.raises(ValueError, match="diverges"):
        T.phase_memory_theory(D, D, 0.1, "complex_linear")
    with pytest.raises(ValueError, match="diverges"):
        T.phase_memory_theory(D, 2 * D, 0.1, "real_linear")
    with pytest.raises(ValueError, match="noise"):
        T.phase_memory_accuracy(8, 8, noise=-1)
    with pytest.raises(ValueError, match="decoder"):
        T.phase_memory_accuracy(8, 8, decoder="lstsq")
    with pytest.raises(ValueError, match="items"):
        T.phase_memory_theory(8, 8, items="quaternion")


# --- 3. the particle phase -------------------------------------------------------------------

def test_contribution_weights_closed_form_and_scan():
    w = T.contribution_weights(0.25, 4)
    assert torch.allclose(w, torch.tensor([0.25 * 0.75 ** 3, 0.25 * 0.75 ** 2, 0.25 * 0.75, 0.25], dtype=torch.float64))
    # time-varying gate: the weight of u_s in h_L, read off the scan with one-hot inputs in time
    L = 6
    p = torch.rand(L, generator=torch.Generator().manual_seed(0))
    eye = torch.eye(L, dtype=torch.complex64)[:, :, None]  # (B=L, L, 1): batch s has u_s = 1
    h = minimipt.mipt_scan(p.expand(L, L)[..., None].contiguous(), torch.zeros(L, L, 1), eye,
                           method="sequential")[:, -1, 0]
    assert torch.allclose(T.contribution_weights(p).float(), h.real, atol=1e-6)
    with pytest.raises(ValueError, match="L"):
        T.contribution_weights(0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        T.contribution_weights(torch.tensor([0.5, 1.5]))


def test_contribution_entropy_limits_and_monotone():
    assert float(T.contribution_entropy(1.0, 10)) == 0.0
    assert float(T.contribution_entropy(1e-9, 10)) == pytest.approx(1.0, abs=1e-6)
    ps = torch.logspace(-3, 0, 12)
    ent = torch.stack([T.contribution_entropy(float(q), 100) for q in ps])
    assert torch.all(ent[1:] < ent[:-1])


def test_geometric_entropy_is_the_large_L_time_entropy():
    for p in (0.3, 0.05, 0.01):
        H = T.geometric_entropy(p)
        q = p * (1 - p) ** torch.arange(int(60 / p), dtype=torch.float64)  # the tail beyond is below e^-60
        assert H == pytest.approx(float(-(q * q.log()).sum()), rel=1e-9)
        assert H == pytest.approx(1 + math.log(1 / p), abs=p)  # ln(1/p) + 1 - p/2 + O(p^2)
        L = int(200 / p)
        assert float(T.contribution_entropy(p, L)) == pytest.approx(H / math.log(L), rel=1e-3)
    # not a function of pL alone: same pL, different entropies
    assert abs(float(T.contribution_entropy(0.1, 100)) - float(T.contribution_entropy(0.01, 1000))) > 0.05
    assert T.geometric_entropy(1.0) == 0.0
    with pytest.raises(ValueError, match="p must"):
        T.geometric_entropy(0.0)


def test_state_entropy_one_hot_uniform_and_errors():
    assert float(T.state_entropy(torch.tensor([0, 0, 3.0j, 0]))) == 0.0
    assert float(T.state_entropy(torch.polar(torch.ones(8), torch.arange(8.0)))) == pytest.approx(1.0)
    assert float(T.state_entropy(torch.tensor([1.0, 1.0, 0, 0]))) == pytest.approx(0.5)  # log 2 / log 4
    assert T.state_entropy(torch.ones(3, 5, 4)).shape == (3, 5)
    with pytest.raises(ValueError, match="all zero"):
        T.state_entropy(torch.zeros(4))
    with pytest.raises(ValueError, match="at least 2"):
        T.state_entropy(torch.ones(1))


def test_sparse_tokens():
    u = T.sparse_tokens(3, 5, 16, 4, seed=0)
    assert u.shape == (3, 5, 16) and torch.all((u != 0).sum(-1) == 4)
    assert torch.allclose(u[u != 0].abs(), torch.ones(60), atol=1e-6)
    with pytest.raises(ValueError, match="active"):
        T.sparse_tokens(1, 1, 4, 5)


def test_entropy_vs_p_monotone_trend():
    r = T.entropy_vs_p([0.003, 0.03, 0.3, 1.0], D=32, L=128, active=2, trials=16, seed=0)
    se, ce = r["state_entropy"], r["contribution_entropy"]
    assert all(a > b for a, b in zip(se, se[1:])) and all(a > b for a, b in zip(ce, ce[1:]))
    assert se[-1] == pytest.approx(r["single_token"]) and ce[-1] == 0.0


def test_recall_phase_diagram_agrees_with_theory_and_has_both_failure_modes():
    r = T.recall_phase_diagram([0.003, 0.03, 0.3], [0.25, 1.0, 4.0], D=32, trials=16, seed=0)
    rec, th = torch.tensor(r["recall"]), torch.tensor(r["theory"])
    assert rec.shape == (3, 3) and r["N"] == [8, 32, 128]
    assert (rec - th).abs().max() < 0.05
    assert rec[0, 0] > 0.98  # small p, few items: recall
    assert rec[0, 2] < 0.85  # small p, N/D = 4: crosstalk
    assert rec[2, 1] < 0.75  # large p: forgetting
    with pytest.raises(ValueError, match="ratios"):
        T.recall_phase_diagram([0.1], [0.0])
    with pytest.raises(ValueError, match="ps"):
        T.recall_phase_diagram([0.0], [1.0])
