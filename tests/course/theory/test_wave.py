"""minimipt.course.theory.wave (notebook 02): the phase (holographic) memory: exact cases, the scan at
small p, retrieval predicted against measured for each readout, the transition at N/D."""

from __future__ import annotations

import math

import pytest
import torch

import minimipt
from minimipt.course import theory as T


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
