"""Checks of the exercises of notebooks 00-03 (the theory notebooks).

Each check recomputes the answer it expects from the package (:mod:`minimipt.course.theory`,
:func:`minimipt.mipt_scan`) or from a measurement, and raises ``AssertionError`` with a hint when the
learner's answer disagrees. Registered by id with :func:`~minimipt.course.exercises.exercise`.
"""

from __future__ import annotations

import math

import torch

from .. import theory
from ._registry import exercise


def _close(actual, expected, tol: float, what: str) -> None:
    actual, expected = float(actual), float(expected)
    assert math.isfinite(actual) and abs(actual - expected) <= tol, (
        f"{what}: expected about {expected:.6g} (within {tol:g}), got {actual:.6g}")


# --------------------------------------------------------------------------------------------
# 00 · start here
# --------------------------------------------------------------------------------------------

@exercise("00.1")
def _info_on_cpu(printed: str) -> None:
    assert isinstance(printed, str), "pass the line that `python -m minimipt info` printed, as a string"
    assert "device cpu" in printed, f"with MINIMIPT_DEVICE=cpu the line should say 'device cpu'; got {printed!r}"


@exercise("00.2")
def _period_four(theta) -> None:
    t = torch.arange(40, dtype=torch.float64)
    curve = torch.cos(float(theta) * t)
    assert torch.allclose(curve[4:], curve[:-4], atol=1e-6), "Re e^{iθt} does not repeat after 4 steps"
    for shorter in (1, 2):
        assert not torch.allclose(curve[shorter:], curve[:-shorter], atol=1e-6), (
            f"this θ repeats already after {shorter} step(s): find one whose smallest period is 4")


# --------------------------------------------------------------------------------------------
# 01 · the no-go argument
# --------------------------------------------------------------------------------------------

@exercise("01.1")
def _best_decay(best_decay) -> None:
    a = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    for k in (1, 2, 4, 10, 30):
        objective = (1 - a) * a ** k
        _close(best_decay(k), a[objective.argmax()], 1e-4, f"argmax of (1 − a) a^k for k = {k}")
        if k >= 10:  # the largest share approaches 1 / (e (k + 1))
            _close(objective.max() * math.e * (k + 1), 1.0, 0.06, f"e (k + 1) · max for k = {k}")


@exercise("01.2")
def _wide_state(reaches_k4: bool, reaches_k16: bool) -> None:
    for k, claimed in ((4, reaches_k4), (16, reaches_k16)):
        r = theory.copy_recall_tradeoff(theory.TRADEOFF_DECAYS, k=k, D=128, L=32, V=64, trials=64, seed=0)
        best = max(min(a, b) for a, b in zip(r["recall"], r["current"]))
        assert bool(claimed) == (best >= 0.9), (
            f"k = {k}, D = 128: the best constant gate gets min(recall, current) = {best:.2f}; "
            f"so the answer is {best >= 0.9}")


def split_operator(D: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Half the channels rotate with ``|λ| = 1`` (distinct angles), half have ``λ = 0``; ``B`` writes every channel."""
    angles = 2 * math.pi * torch.arange(D // 2, dtype=torch.float64) / (D // 2) + 0.1
    lam = torch.cat([torch.polar(torch.ones(D // 2, dtype=torch.float64), angles), torch.zeros(D - D // 2, dtype=torch.float64)])
    return torch.diag(lam.to(torch.complex128)), torch.ones(D, dtype=torch.complex128)


@exercise("01.3")
def _split_rank(rank_fn) -> None:
    for D, L in ((8, 32), (16, 64), (16, 4), (6, 5)):
        A, B = split_operator(D)
        rank = float(theory.fixed_operator_recall(A, B, L).sum())  # Σ_s R²_s = rank M without noise
        _close(rank_fn(D, L), round(rank), 1e-9, f"rank of the split operator's map for D = {D}, L = {L}")


@exercise("01.4")
def _diag_gain_range(diag_gain_range) -> None:
    g = torch.Generator().manual_seed(4)
    for D in (1, 3, 8):
        lam = torch.complex(torch.randn(D, generator=g), torch.randn(D, generator=g)).to(torch.complex128)
        lo, hi = diag_gain_range(lam)
        exp_lo, exp_hi = theory.gain_range(torch.diag(lam))
        _close(lo, exp_lo, 1e-9, f"smallest gain of diag(λ), D = {D}")
        _close(hi, exp_hi, 1e-9, f"largest gain of diag(λ), D = {D}")


@exercise("01.5")
def _subspace_operator(make_operator) -> None:
    g = torch.Generator().manual_seed(5)
    D, r, eps = 6, 2, 0.1
    Z = torch.complex(torch.randn(D, D, generator=g), torch.randn(D, D, generator=g)).to(torch.complex128)
    Q_full, _ = torch.linalg.qr(Z)
    Q, Q_perp = Q_full[:, :r], Q_full[:, r:]  # a basis of S and of its orthogonal complement
    A = torch.as_tensor(make_operator(Q, eps)).to(torch.complex128)
    assert A.shape == (D, D), f"make_operator must return a (D, D) matrix, got {tuple(A.shape)}"
    x = torch.complex(torch.randn(r, 50, generator=g), torch.randn(r, 50, generator=g)).to(torch.complex128)
    y = torch.complex(torch.randn(D - r, 50, generator=g), torch.randn(D - r, 50, generator=g)).to(torch.complex128)
    ins, outs = Q @ x, Q_perp @ y
    assert torch.allclose((A @ ins).norm(dim=0), ins.norm(dim=0), rtol=1e-9), "‖A h‖ = ‖h‖ must hold for h in S"
    assert torch.allclose((A @ outs).norm(dim=0), eps * outs.norm(dim=0), rtol=1e-9), (
        "‖A h‖ = ε ‖h‖ must hold for h orthogonal to S")


@exercise("01.6")
def _delay_line(delay_line) -> None:
    for D, L in ((4, 12), (8, 8), (3, 20)):
        A, B = delay_line(D)
        r2 = theory.fixed_operator_recall(A, B, L)
        want = (torch.arange(L) >= L - D).double()  # the last D tokens exactly, nothing older
        assert torch.allclose(r2, want, atol=1e-8), (
            f"D = {D}, L = {L}: recall per position should be {want.tolist()}, got {[round(x, 3) for x in r2.tolist()]}")


# --------------------------------------------------------------------------------------------
# 02 · the wave phase
# --------------------------------------------------------------------------------------------

@exercise("02.1")
def _real_keys(accuracy_fn) -> None:
    g = torch.Generator().manual_seed(21)
    for D, N in ((64, 32), (64, 128)):
        keys = torch.randint(2, (400, N, D), generator=g).double() * 2 - 1  # real ±1 keys
        v = torch.randint(2, (400, N), generator=g).double() * 2 - 1
        h = (v[..., None] * keys).sum(-2)
        v_hat = (keys * h[:, None]).mean(-1)
        measured = float((v_hat.sign() == v).double().mean())
        _close(accuracy_fn(D, N), measured, 0.015, f"bit accuracy with real ±1 keys, D = {D}, N = {N} (measured)")


@exercise("02.2")
def _quality_point_nine(ratio, accuracy) -> None:
    D = 64
    N = 1 + D / 9  # D / (D + N − 1) = 0.9
    _close(ratio, N / D, 0.01, "N/D at which the matched quality is 0.9 (D = 64)")
    _close(accuracy, theory.phase_memory_theory(D, N)["accuracy"], 1e-3, "the bit accuracy there")


@exercise("02.3")
def _complex_items(accuracy_fn) -> None:
    for N in (32, 128):
        measured = theory.phase_memory_accuracy(64, N, trials=64, seed=3, items="complex")["accuracy"]
        _close(accuracy_fn(64, N), measured, 0.02, f"bit accuracy of (±1 ± i)/√2 items, D = 64, N = {N} (measured)")


@exercise("02.4")
def _noise_amplification(error_fn) -> None:
    D, sigma = 64, 0.5
    for N in (16, 48):
        g = torch.Generator().manual_seed(N)
        keys = theory.random_phase_keys(N, D, trials=200, seed=N)
        v = (torch.randint(2, (200, N), generator=g).float() * 2 - 1).to(torch.complex64)
        eps = torch.complex(torch.randn(200, D, generator=g), torch.randn(200, D, generator=g)) * sigma / math.sqrt(2)
        h = theory.phase_memory_store(keys, v) + eps
        err = (theory.phase_memory_retrieve(h, keys, "complex_linear") - v).abs().pow(2).sum(-1).mean()
        pred = float(error_fn(D, N, sigma))
        assert abs(pred / float(err) - 1) < 0.15, (
            f"total squared error for D = {D}, N = {N}, σ = {sigma}: measured {float(err):.3f}, yours {pred:.3f}")


@exercise("02.5")
def _real_linear_readout(readout) -> None:
    D = 64
    for N in (40, 128, 200):
        keys = theory.random_phase_keys(N, D, trials=3, seed=N)
        v = torch.randint(2, (3, N), generator=torch.Generator().manual_seed(N)).float() * 2 - 1
        h = theory.phase_memory_store(keys, v)
        ours = torch.as_tensor(readout(h, keys))
        assert ours.shape == (3, N) and not ours.is_complex(), f"return real estimates of shape (3, {N}), got {ours.dtype} {tuple(ours.shape)}"
        ref = theory.phase_memory_retrieve(h, keys, "real_linear").real
        assert torch.allclose(ours.float(), ref, atol=1e-3), f"N = {N}: your estimates differ from the best real-linear ones"
        if N <= 2 * D:
            assert torch.allclose(ours.float(), v, atol=1e-3), f"N = {N} ≤ 2D: the real-linear readout must be exact"


@exercise("02.6")
def _real_part_kink(kink_fn) -> None:
    for D in (8, 16, 32):
        assert int(kink_fn(D)) == D, f"D = {D}: the readout of Re h alone has D real equations; got {kink_fn(D)}"
        for N, exact in ((D, True), (D + D // 2, False)):
            keys = theory.random_phase_keys(N, D, trials=2, seed=D + N)
            v = torch.randint(2, (2, N), generator=torch.Generator().manual_seed(N)).double() * 2 - 1
            X = keys.transpose(-1, -2).real.double()  # (B, D, N): Re h = Re(K^T) v
            v_hat = torch.linalg.pinv(X) @ (X @ v[..., None])
            assert torch.allclose(v_hat[..., 0], v, atol=1e-6) == exact


@exercise("02.7")
def _worst_item(worst_age) -> None:
    B, N, D, p = 256, 48, 32, 0.02
    g = torch.Generator().manual_seed(7)
    v = torch.randint(2, (B, N), generator=g).float() * 2 - 1
    theta = 2 * math.pi * torch.rand(B, N, D, generator=g)
    from ...ops import mipt_scan

    h = mipt_scan(torch.full((B, N, D), p), theta, v[..., None].expand(B, N, D).to(torch.complex64))[:, -1]
    right = (theory.phase_memory_retrieve(h, theory.scan_phase_keys(theta)).real.sign() == v).float().mean(0)  # (N,)
    by_age = right.flip(0)  # age 0 = the newest item
    assert by_age[-8:].mean() < by_age[:8].mean(), "measurement: old items should be read worse than new ones"
    assert int(worst_age) == N - 1, f"the weight p(1 − p)^k is smallest at the largest age, k = N − 1 = {N - 1}"


# --------------------------------------------------------------------------------------------
# 03 · the particle phase
# --------------------------------------------------------------------------------------------

@exercise("03.1")
def _gate_limits(wave_limit, particle_limit) -> None:
    from ...ops import mipt_scan

    g = torch.Generator().manual_seed(31)
    B, L, D = 2, 9, 5
    theta = 2 * math.pi * torch.rand(B, L, D, generator=g, dtype=torch.float64)
    u = torch.complex(torch.randn(B, L, D, generator=g, dtype=torch.float64), torch.randn(B, L, D, generator=g, dtype=torch.float64))
    h0 = torch.complex(torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, D, generator=g, dtype=torch.float64))
    wave = mipt_scan(torch.zeros(B, L, D, dtype=torch.float64), theta, u, h0=h0, method="sequential")
    particle = mipt_scan(torch.ones(B, L, D, dtype=torch.float64), theta, u, h0=h0, method="sequential")
    yours = torch.as_tensor(wave_limit(h0, theta))
    assert yours.shape == (B, D) and torch.allclose(yours.to(wave.dtype), wave[:, -1], atol=1e-9), (
        "wave_limit(h0, theta) should be the last state for p ≡ 0, shape (B, D)")
    yours = torch.as_tensor(particle_limit(u))
    assert yours.shape == (B, L, D) and torch.allclose(yours.to(particle.dtype), particle, atol=1e-12), (
        "particle_limit(u) should be every state for p ≡ 1, shape (B, L, D)")


@exercise("03.2")
def _time_entropy(approx_fn, p_half) -> None:
    for p, L in ((0.05, 512), (0.05, 4096), (0.01, 8192)):
        _close(approx_fn(p, L), theory.contribution_entropy(p, L), 0.02, f"time entropy for p = {p}, L = {L}")
    _close(theory.contribution_entropy(float(p_half), 256), 0.5, 0.01, f"time entropy at your p = {float(p_half):g}, L = 256")


@exercise("03.3")
def _half_weight(p_fn) -> None:
    for N in (2, 10, 100):
        w = theory.contribution_weights(float(p_fn(N)), N)
        _close(w[0] / w[-1], 0.5, 1e-6, f"oldest / newest weight for N = {N}")


def periodic_reset_gate(L: int = 64, period: int = 16, p_low: float = 0.001) -> torch.Tensor:
    """``p_t = 1`` at ``t = 0, period, 2 period, …`` and ``p_low`` elsewhere, shape ``(L,)``."""
    p = torch.full((L,), p_low, dtype=torch.float64)
    p[::period] = 1.0
    return p


@exercise("03.4")
def _reset_weights(weights) -> None:
    w = torch.as_tensor(weights, dtype=torch.float64)
    ref = theory.contribution_weights(periodic_reset_gate())
    assert w.shape == ref.shape, f"return the {ref.numel()} weights, oldest first"
    assert torch.allclose(w, ref, atol=1e-9), "your weights differ from contribution_weights(p) (look at the last reset)"


def _channel_entropy(tokens: torch.Tensor, p: float) -> float:
    from ...ops import mipt_scan

    B, L, D = tokens.shape
    theta = 2 * math.pi * torch.rand(B, L, D, generator=torch.Generator().manual_seed(1))
    h = mipt_scan(torch.full((B, L, D), p), theta, tokens)[:, -1]
    return float(theory.state_entropy(h).mean())


@exercise("03.5")
def _one_channel_tokens(at_p1, at_p0) -> None:
    tokens = theory.sparse_tokens(16, 2048, 64, 1, seed=0)
    _close(at_p1, _channel_entropy(tokens, 1.0), 1e-6, "channel entropy at p = 1, active = 1")
    _close(at_p0, _channel_entropy(tokens, 1e-4), 0.03, "channel entropy at p → 0 (measured at p = 1e-4, L = 2048, D = 64)")


@exercise("03.6")
def _dense_unit_tokens(at_p1, at_p0) -> None:
    tokens = theory.random_phase_keys(2048, 64, trials=16, seed=0)  # |u_{t,d}| = 1, random phases
    _close(at_p1, _channel_entropy(tokens, 1.0), 1e-6, "channel entropy at p = 1, dense unit-modulus tokens")
    _close(at_p0, _channel_entropy(tokens, 1e-4), 0.03, "channel entropy at p → 0 (measured at p = 1e-4, L = 2048, D = 64)")
