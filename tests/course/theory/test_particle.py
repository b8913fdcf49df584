"""minimipt.course.theory.particle (notebook 03): contribution weights and entropies, sparse tokens, and
the recall phase diagram over (p, N/D)."""

from __future__ import annotations

import math

import pytest
import torch

import minimipt
from minimipt.course import theory as T


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
