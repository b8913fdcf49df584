"""Checks of the exercises of notebooks 04-06 (the layer, the scan, the cache).

Each check recomputes the answer it expects from the package (:class:`minimipt.MIPTLayer`,
:func:`minimipt.mipt_scan`, :mod:`minimipt.course.analysis`) or from a measurement, and raises
``AssertionError`` with a hint when the learner's answer disagrees.
"""

from __future__ import annotations

import copy
import math

import torch

from .. import analysis
from ._registry import exercise
from .theory_checks import _close


def _randn_complex(*shape, g: torch.Generator) -> torch.Tensor:
    return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                         torch.randn(*shape, generator=g, dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# 04 · the layer
# --------------------------------------------------------------------------------------------

@exercise("04.1")
def _conjugate_rotation(flip) -> None:
    from ...layer import MIPTLayer
    from ...ops import mipt_scan

    torch.manual_seed(41)
    layer = MIPTLayer(8).double()
    x = torch.randn(2, 15, 8, generator=torch.Generator().manual_seed(41), dtype=torch.float64)
    with torch.no_grad():
        z, theta, u = layer.projections(x)
        y_minus = mipt_scan(torch.sigmoid(z), -theta, u, method="sequential").real  # the layer with e^{-iθ}
        y_new = flip(copy.deepcopy(layer))(x)
    assert torch.allclose(y_new, y_minus, atol=1e-10), (
        "flip(layer) should compute with e^{+iθ} what the original layer computes with e^{-iθ}")


@exercise("04.2")
def _imaginary_part(derivative) -> None:
    g = torch.Generator().manual_seed(42)
    for _ in range(5):
        p, theta = float(torch.rand(1, generator=g)), float(2 * math.pi * torch.rand(1, generator=g))
        im = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        h_prev = torch.complex(torch.tensor(-0.7, dtype=torch.float64), im)
        h = (1 - p) * torch.polar(torch.tensor(1.0, dtype=torch.float64), torch.tensor(theta, dtype=torch.float64)) * h_prev
        (want,) = torch.autograd.grad(h.real, im)
        _close(derivative(p, theta), want, 1e-9, f"∂ Re h_t / ∂ Im h_(t-1) at p = {p:.3f}, θ = {theta:.3f}")


@exercise("04.3")
def _long_memory_fraction(fraction) -> None:
    from ...layer import MIPTLayer

    for (a, b), m in (((1e-3, 0.1), 100), ((1e-2, 0.3), 20), ((1e-3, 0.1), 5)):
        torch.manual_seed(43)
        D = 1024
        p0 = torch.sigmoid(MIPTLayer(D, p_init=(a, b)).in_proj.bias[:D].detach())
        measured = float((1 / p0 > m).float().mean())
        _close(fraction(a, b, m), measured, 0.05, f"fraction of channels with 1/p0 > {m} for p_init = ({a}, {b}) (measured, D = {D})")


@exercise("04.4")
def _second_spiral(angle) -> None:
    tr = analysis.impulse_trajectory(-3.0, 2 * math.pi / 24, L=25)
    rel = float(torch.angle(tr["h"][24]))  # the first spiral at t = 24; the second impulse adds p > 0 at angle 0
    wrap = (float(angle) - rel + math.pi) % (2 * math.pi) - math.pi
    assert abs(wrap) < 1e-6, f"angle between the two contributions at t = 24: expected {rel:.3g} (mod 2π), got {angle}"


def _bisect(finite, lo: float, hi: float) -> float:
    """The point in [lo, hi] where ``finite(z)`` switches (float32), to ~1e-4."""
    for _ in range(60):
        mid = (lo + hi) / 2
        if finite(mid) == finite(lo):
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@exercise("04.5")
def _float32_limits(z_low, z_high) -> None:
    def log_p(z):
        return bool(torch.isfinite(torch.log(torch.sigmoid(torch.tensor(z, dtype=torch.float32)))))

    def log_1mp(z):
        return bool(torch.isfinite(torch.log(1 - torch.sigmoid(torch.tensor(z, dtype=torch.float32)))))

    _close(z_low, _bisect(log_p, -120.0, 0.0), 0.01, "smallest float32 logit with a finite log(sigmoid(z))")
    _close(z_high, _bisect(log_1mp, 0.0, 40.0), 0.01, "largest float32 logit with a finite log(1 - sigmoid(z))")


# --------------------------------------------------------------------------------------------
# 05 · the scan
# --------------------------------------------------------------------------------------------

@exercise("05.1")
def _sequential_scan(scan_loop) -> None:
    from ...ops import mipt_scan

    g = torch.Generator().manual_seed(51)
    p, theta, u = analysis.random_scan_inputs(2, 23, 4, p_range=(0.01, 0.5), seed=51)
    h0 = _randn_complex(2, 4, g=g)
    for init in (None, h0):
        want = mipt_scan(p, theta, u, h0=init, method="sequential")
        got = torch.as_tensor(scan_loop(p, theta, u, init))
        assert got.shape == want.shape, f"return every state, shape {tuple(want.shape)}; got {tuple(got.shape)}"
        assert torch.allclose(got.to(want.dtype), want, atol=1e-12), (
            f"your loop differs from the recurrence ({'with' if init is not None else 'without'} h0)")


def first_nonfinite(p: float) -> int:
    """First position where the float32 cumprod form gives NaN/inf, for a constant gate ``p``, ``θ = 0``, ``u = 1``."""
    L = int(100 / -math.log1p(-p)) + 10
    h = analysis.scan_cumprod(torch.full((1, L, 1), p), torch.zeros(1, L, 1), torch.ones(1, L, 1, dtype=torch.complex64))
    bad = (~torch.isfinite(torch.view_as_real(h))).any(-1)[0, :, 0].nonzero()
    return int(bad[0])


@exercise("05.2")
def _cumprod_length(L_star) -> None:
    for p in (0.01, 0.1, 0.5):
        measured = first_nonfinite(p)
        _close(L_star(p), measured, max(2.0, 0.002 * measured), f"first non-finite position of the cumprod form at p = {p}")


@exercise("05.3")
def _logspace_float64(error_model, length_for_1e6) -> None:
    r = analysis.scan_error_vs_length([1024, 4096], methods=("logspace",), dtypes=(torch.float64,), B=2, D=32, seed=0)
    for L, measured in zip(r["L"], r["error"][("logspace", "float64")]):
        ratio = float(error_model(L)) / measured
        assert 0.2 < ratio < 5, f"L = {L}: measured float64 error {measured:.2e}, your model {error_model(L):.2e}"
    assert float(length_for_1e6) > 1e9, "at ~1e-16 per unit of |a*_t|, a relative error of 1e-6 needs |a*_t| ≈ 1e10"


def scan_prefix_difference(p, theta, u, whole: bool, C: int = 16) -> torch.Tensor:
    """The chunked scan with exponents ``S_j − S_s`` from prefix sums ``S`` of ``log a``: over the whole
    sequence (``whole``) or restarted in every chunk. ``L`` must be a multiple of ``C``."""
    B, L, D = u.shape
    n = L // C
    log_a = torch.complex(torch.log1p(-p), theta)  # (B, L, D)
    b4 = (p * u).view(B, n, C, D)
    S4 = (log_a.cumsum(1) if whole else log_a.view(B, n, C, D).cumsum(2).view(B, L, D)).view(B, n, C, D)
    start = S4[:, :, :1] - log_a.view(B, n, C, D)[:, :, :1]  # S just before each chunk
    below = torch.tril(torch.ones(C, C, dtype=torch.bool))[:, :, None]  # [j, s]: s <= j
    M = torch.where(below, torch.exp(S4[:, :, :, None] - S4[:, :, None]), torch.zeros((), dtype=log_a.dtype))
    local = torch.einsum("bnjsd,bnsd->bnjd", M, b4)  # (B, n, C, D)
    A = torch.exp(S4 - start)  # ∏ of the chunk's gates up to j
    H, out = torch.zeros(B, D, dtype=u.dtype), []
    for c in range(n):
        out.append(local[:, c] + A[:, c] * H[:, None])
        H = out[-1][:, -1]
    return torch.cat(out, 1)


@exercise("05.4")
def _prefix_differences(whole_grows: bool, local_grows: bool) -> None:
    from ...ops import scan_sequential

    p, theta, u = analysis.random_scan_inputs(1, 4096, 8, seed=54)
    ref = scan_sequential(p, theta, u)
    pf, tf, uf = p.float(), theta.float(), u.to(torch.complex64)
    for whole, claimed in ((True, whole_grows), (False, local_grows)):
        err = []
        for L in (256, 4096):
            h = scan_prefix_difference(pf[:, :L], tf[:, :L], uf[:, :L], whole).to(torch.complex128)
            err.append(float((h - ref[:, :L]).abs().norm() / ref[:, :L].abs().norm()))
        grows = err[1] > 3 * err[0]
        name = "whole-sequence" if whole else "within-chunk"
        assert bool(claimed) == grows, f"{name} prefix sums: float32 error {err[0]:.1e} at L = 256, {err[1]:.1e} at L = 4096"


@exercise("05.6")
def _gate_gradients(grads) -> None:
    g = torch.Generator().manual_seed(56)
    p, theta, u = analysis.random_scan_inputs(2, 7, 3, seed=56)
    ga, gb = _randn_complex(2, 7, 3, g=g), _randn_complex(2, 7, 3, g=g)  # ∂L/∂a, ∂L/∂b (PyTorch's convention)
    leaves = [x.clone().requires_grad_() for x in (p, theta, u)]
    a, b = torch.polar(1 - leaves[0], leaves[1]), leaves[0] * leaves[2]
    want = torch.autograd.grad((ga.conj() * a + gb.conj() * b).real.sum(), leaves)
    got = grads(ga, gb, p, theta, u)
    for name, x, y in zip(("∂L/∂p", "∂L/∂θ", "∂L/∂u"), got, want):
        assert torch.allclose(torch.as_tensor(x).to(y.dtype), y, atol=1e-10), f"{name} differs from autograd"


# --------------------------------------------------------------------------------------------
# 06 · the cache
# --------------------------------------------------------------------------------------------

@exercise("06.1")
def _no_contrast(held_at_63, window_with_noise: bool) -> None:
    m = analysis.cache_membership(analysis.synthetic_log_p(64, 32, contrast=0.0, noise=0.0, seed=0), slots=8)
    want = set(m["held"][0, 63].nonzero().flatten().tolist())
    assert set(int(s) for s in held_at_63) == want, f"with contrast = 0 and noise = 0 the cache holds {sorted(want)} at t = 63"
    noisy = analysis.cache_membership(analysis.synthetic_log_p(64, 32, contrast=0.0, noise=0.5, seed=0), slots=8)
    window = set(noisy["held"][0, 63].nonzero().flatten().tolist()) == set(range(56, 64))
    assert bool(window_with_noise) == window, f"with noise = 0.5 the cache holds {sorted(noisy['held'][0, 63].nonzero().flatten().tolist())}"


def evictions_ties_to_older(log_w: list[float], eligible: list[bool], K: int) -> torch.Tensor:
    """The streaming write rule with ties going to the *older* token: when the ``K`` slots are full, a new
    eligible token replaces the lowest-score entry (the newest among equal lowest) only if its score is
    strictly larger. Returns the eviction time of every position (``L`` if held to the end, ``s`` if never written)."""
    L = len(log_w)
    e, held = list(range(L)), []
    for t in range(L):
        if not eligible[t]:
            continue
        if len(held) < K:
            held.append(t)
            e[t] = L
            continue
        victim = min(held, key=lambda s: (log_w[s], -s))
        if log_w[t] > log_w[victim]:
            held.remove(victim)
            e[victim] = t
            held.append(t)
            e[t] = L
    return torch.tensor(e)


@exercise("06.3")
def _older_ties(evict) -> None:
    g = torch.Generator().manual_seed(63)
    cases = [(torch.zeros(20), torch.ones(20, dtype=torch.bool), 5),  # all scores equal
             ((torch.randint(4, (40,), generator=g) * 0.5), torch.ones(40, dtype=torch.bool), 6),  # many ties
             (torch.randn(40, generator=g), torch.rand(40, generator=g) > 0.3, 4)]
    for log_w, eligible, K in cases:
        want = evictions_ties_to_older(log_w.tolist(), eligible.tolist(), K)
        got = torch.as_tensor(evict(log_w.tolist(), eligible.tolist(), K))
        assert torch.equal(got.long(), want), f"K = {K}: eviction times {got.tolist()}, expected {want.tolist()}"


def accumulated_attention_keep(attn: torch.Tensor, K: int) -> set[int]:
    """The ``K`` keys with the largest attention summed over all queries (a one-shot form of H2O's score)."""
    return set(torch.topk(attn.sum(0), K).indices.tolist())


@exercise("06.4")
def _heavy_hitters(h2o_keep) -> None:
    g = torch.Generator().manual_seed(64)
    for L, K in ((16, 4), (40, 8)):
        logits = torch.randn(L, L, generator=g, dtype=torch.float64)
        attn = torch.softmax(logits.masked_fill(torch.triu(torch.ones(L, L, dtype=torch.bool), 1), -math.inf), -1)
        got = set(int(s) for s in h2o_keep(attn, K))
        assert got == accumulated_attention_keep(attn, K), f"L = {L}, K = {K}: kept {sorted(got)}"


@exercise("06.5")
def _mean_or_max(log_p) -> None:
    log_p = torch.as_tensor(log_p, dtype=torch.float64)
    assert log_p.dim() == 2 and log_p.shape[0] == 2 and bool((log_p <= 0).all()), (
        "give log p for two tokens: a (2, D) tensor of values <= 0")
    by_mean = int(torch.logsumexp(log_p, -1).argmax())
    by_max = int(log_p.max(-1).values.argmax())
    assert by_mean != by_max, "with your gate the mean and the max over channels pick the same token"
