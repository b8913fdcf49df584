"""Plotting functions for the notebooks (needs the ``course`` extra: matplotlib).

Every function computes what it shows through ``minimipt.course.theory`` (or takes that function's
result), draws on a fresh :class:`matplotlib.figure.Figure` that is not registered with pyplot (no
global state, nothing to close, nothing shown twice) and returns it. In a notebook with
``%matplotlib inline`` a returned figure is displayed; ``ipywidgets.interact`` displays the return
value of its callback, so ``interact(plot_phase_memory, D=..., N=..., noise=...)`` redraws on every
slider move. Tests call the same functions headless (``MPLBACKEND=Agg``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from . import theory

__all__ = [
    "plot_rotation",
    "plot_memory_kernel",
    "plot_tradeoff",
    "plot_tradeoff_explorer",
    "plot_selective_copy",
    "plot_phase_memory",
    "plot_phase_diagram",
    "plot_entropy_vs_p",
    "plot_particle_state",
]


def _figure(ncols: int = 1, width: float = 6.4, height: float = 3.6):
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def plot_rotation(theta: float = 0.3, steps: int = 40) -> Figure:
    """One wave-phase channel: the real part of a unit complex number rotated by ``θ`` per step,
    ``Re e^{iθt}`` for ``t = 0 … steps−1`` (the widget of ``00_start_here``)."""
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    if not math.isfinite(theta):
        raise ValueError(f"theta must be a finite angle in radians, got {theta!r}")
    t = np.arange(steps)
    fig, ax = _figure(width=6.0, height=2.5)
    ax.plot(t, np.cos(theta * t), marker="o", ms=3)
    ax.set(xlabel="step t", ylabel=r"Re $e^{i\theta t}$", ylim=(-1.1, 1.1), title=f"θ = {theta:.2f} rad/step")
    return fig


def plot_memory_kernel(abs_lams: Sequence[float] = (0.5, 0.9, 0.99, 1.0), K: int = 64,
                       floor: float = 1e-3) -> Figure:
    """The LTI memory kernel ``|lambda|^k`` for several ``|lambda|`` (log scale), one line each.

    The dotted line marks ``floor``; the legend gives each kernel's memory length
    ``k* = log(floor) / log|lambda|``, the age at which a token has faded below it.
    """
    abs_lams = [float(a) for a in abs_lams]
    if not abs_lams or any(not 0 < a <= 1 for a in abs_lams):
        raise ValueError(f"abs_lams must be values in (0, 1], got {abs_lams}")
    if not 0 < floor < 1:
        raise ValueError(f"floor must lie in (0, 1), got {floor}")
    fig, ax = _figure()
    k = np.arange(K)
    for a in abs_lams:
        kernel = theory.lti_memory_kernel(a, K).numpy()
        life = "∞" if a == 1 else f"{math.log(floor) / math.log(a):.0f}"
        ax.plot(k, kernel, label=f"|λ| = {a:g}  (k* = {life})")
    ax.axhline(floor, color="k", ls=":", lw=1)
    ax.set(yscale="log", ylim=(floor / 10, 1.5), xlabel="age k of a token (steps back)",
           ylabel="weight |λ|^k in h_t", title="memory kernel of h_t = λ h_{t−1} + u_t")
    ax.legend(fontsize=8)
    return fig


def plot_tradeoff(result: dict, threshold: float | None = 0.9) -> Figure:
    """Recall of the old token against storage of the current one, from
    :func:`minimipt.course.theory.copy_recall_tradeoff`: one point per fixed decay ``|lambda|`` (the
    trade-off curve) and a star for the input-dependent gate. ``threshold`` shades the corner where
    both are at least that good."""
    fig, ax = _figure(width=5.6, height=4.2)
    rec, cur = np.array(result["recall"]), np.array(result["current"])
    ax.plot(rec, cur, "-", color="0.6", lw=1, zorder=1)
    sc = ax.scatter(rec, cur, c=result["decay"], cmap="viridis", zorder=2, label="constant gate, decay |λ| (fixed operator)")
    fig.colorbar(sc, ax=ax, label="decay |λ|")
    ax.scatter([result["gate_recall"]], [result["gate_current"]], marker="*", s=250, color="C3",
               zorder=3, label="input-dependent gate p_t")
    if threshold is not None:
        ax.fill_between([threshold, 1.05], threshold, 1.05, color="C2", alpha=0.12, label=f"both ≥ {threshold:g}")
    ax.axhline(result["chance"], color="k", ls=":", lw=1)
    ax.axvline(result["chance"], color="k", ls=":", lw=1)
    ax.set(xlim=(-0.02, 1.05), ylim=(-0.02, 1.05), xlabel=f"recall of the token {result['k']} steps back",
           ylabel="recall of the current token",
           title=f"one state of D={result['D']} channels, codebook V={result['V']}")
    ax.legend(fontsize=8, loc="lower left")
    return fig


def plot_tradeoff_explorer(D: int = 32, k: int = 4, L: int = 32, V: int = 64, trials: int = 64,
                           seed: int = 0, decays: Sequence[float] = theory.TRADEOFF_DECAYS) -> Figure:
    """Notebook 01's widget: the retention/precision trade-off of the constant gate for a state of ``D``
    channels and an old token of age ``k`` (:func:`minimipt.course.theory.copy_recall_tradeoff`, drawn by
    :func:`plot_tradeoff`). The sequence is lengthened to ``k + 2`` tokens when ``L`` is too short."""
    result = theory.copy_recall_tradeoff(decays, k=int(k), D=int(D), L=max(int(L), int(k) + 2), V=V,
                                         trials=trials, seed=seed)
    return plot_tradeoff(result)


def plot_selective_copy(D: int = 16, Ls: Sequence[int] = (4, 8, 16, 32, 64, 128), ps: Sequence[float] = (0.003, 0.1, 0.5),
                        trials: int = 256, noise: float = 1e-3, seed: int = 0) -> Figure:
    """Selective copying (:func:`minimipt.course.theory.selective_copy`) against the sequence length ``L``:
    recall of the marked token for constant gates ``p`` (fixed operators; dots measured through the scan,
    lines the best-reader theory), the bound ``min(1, D/L)`` that no fixed operator beats on average, and
    the input-dependent gate."""
    Ls = [int(n) for n in Ls]
    results = [theory.selective_copy(n, D, ps, trials=trials, noise=noise, seed=seed) for n in Ls]
    fig, ax = _figure(width=6.4, height=4.0)
    for i, p in enumerate(results[0]["p"]):
        ax.plot(Ls, [r["theory"][i] for r in results], "-", color=f"C{i}", lw=1)
        ax.plot(Ls, [r["recall"][i] for r in results], "o", color=f"C{i}", ms=5, label=f"constant gate p = {p:g}")
    ax.plot(Ls, [r["bound"] for r in results], "k--", lw=1.5, label="bound for any fixed operator: min(1, D/L)")
    ax.plot(Ls, [r["gate_recall"] for r in results], "*-", color="C3", ms=10, label="input-dependent gate (writes at the marker)")
    ax.set(xscale="log", ylim=(-0.03, 1.05), xlabel="sequence length L", ylabel="recall R² of the marked token",
           title=f"selective copying, one state of D = {D} channels")
    ax.set_xticks(Ls, [str(n) for n in Ls])
    ax.minorticks_off()
    ax.legend(fontsize=7, loc="lower left")
    return fig


_DECODER_STYLE = {"matched": ("C0", "matched (conjugate key)"),
                  "complex_linear": ("C1", "best complex-linear"),
                  "real_linear": ("C2", "best real-linear of [Re h, Im h]")}


def plot_phase_memory(D: int = 64, N: int = 64, noise: float = 0.0, trials: int = 16, seed: int = 0,
                      ratios: Sequence[float] = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)) -> Figure:
    """The wave-phase memory explorer (notebook 02's widget), for real items (bits ``±1``).

    Left: retrieval quality (squared cosine between retrieved and stored values) against N/D for a phase
    memory of ``D`` channels, measured (dots, :func:`minimipt.course.theory.phase_memory_accuracy`) and
    predicted (lines, :func:`minimipt.course.theory.phase_memory_theory`), for the three decoders: the
    matched one, the best complex-linear one (kink at N/D = 1) and the best real-linear one of
    ``[Re h, Im h]`` (kink at N/D = 2). The current ``N/D`` is the red line. Right: the matched decoder's
    retrieved values ``v̂_n`` of one memory with the current ``D``, ``N``, ``noise`` in the complex plane,
    coloured by the stored bit.
    """
    D, N = int(D), int(N)
    if D < 1 or N < 1:
        raise ValueError(f"D and N must be >= 1, got D={D}, N={N}")
    fig, (ax, ax2) = _figure(ncols=2, width=10.5, height=4.0)
    grid = np.geomspace(min(ratios), max(ratios), 200)
    for decoder, (color, label) in _DECODER_STYLE.items():
        th = []
        for r in grid:
            try:
                th.append(theory.phase_memory_theory(D, max(1.0, r * D), noise, decoder)["quality"])
            except ValueError:  # the noisy least-squares formulas diverge where the key matrix is square
                th.append(np.nan)
        ax.plot(grid, th, color=color, lw=1.5, label=f"{label}: theory")
        meas = [theory.phase_memory_accuracy(D, max(1, round(r * D)), noise, trials, seed, decoder)["quality"]
                for r in ratios]
        ax.plot(ratios, meas, "o", color=color, ms=5, label="measured")
    for kink in (1.0, 2.0):
        ax.axvline(kink, color="k", ls=":", lw=1)
    ax.axvline(N / D, color="C3", lw=2, alpha=0.7, label=f"now: N/D = {N / D:.2f}")
    ax.set(xscale="log", ylim=(-0.02, 1.05), xlabel="items per channel N/D",
           ylabel="retrieval quality (cos²)", title=f"phase memory of bits, D = {D}, noise = {noise:g}")
    ax.set_xticks(list(ratios), [f"{r:g}" for r in ratios], fontsize=8)
    ax.minorticks_off()
    ax.legend(fontsize=6, loc="lower left", ncol=2)

    keys = theory.random_phase_keys(N, D, seed=seed)  # (N, D)
    g = torch.Generator().manual_seed(seed + 1)
    v = torch.randint(2, (N,), generator=g).float() * 2 - 1
    eps = torch.complex(torch.randn(D, generator=g), torch.randn(D, generator=g))
    h = theory.phase_memory_store(keys, v) + noise / math.sqrt(2) * eps
    v_hat = theory.phase_memory_retrieve(h, keys, "matched").numpy()
    pos = v.numpy() > 0
    ax2.scatter(v_hat.real[pos], v_hat.imag[pos], s=12, color="C2", label="stored +1")
    ax2.scatter(v_hat.real[~pos], v_hat.imag[~pos], s=12, color="C4", label="stored −1")
    ax2.axvline(0, color="k", lw=1)
    acc = float(np.mean(np.sign(v_hat.real) == v.numpy()))
    pred = theory.phase_memory_theory(D, N, noise, "matched")["accuracy"]
    ax2.set(xlim=(-3, 3), ylim=(-3, 3), aspect="equal", xlabel="Re v̂", ylabel="Im v̂",
            title=f"matched readout, N = {N}: bits right {acc:.2f} (theory {pred:.2f})")
    ax2.legend(fontsize=7, loc="upper left")
    return fig


def plot_phase_diagram(result: dict) -> Figure:
    """Heatmap of recall over (N/D, p) from :func:`minimipt.course.theory.recall_phase_diagram`, with the
    theory's 0.75 and 0.9 contours and the forgetting line ``N = 1/p`` (memory length of the gate)."""
    fig, ax = _figure(width=6.4, height=4.4)
    rec = np.array(result["recall"])  # (n_p, n_r)
    p, r = np.array(result["p"]), np.array(result["ratio"])
    im = ax.pcolormesh(np.arange(len(r) + 1) - 0.5, np.arange(len(p) + 1) - 0.5, rec, vmin=0.5, vmax=1.0,
                       cmap="magma", shading="flat")
    fig.colorbar(im, ax=ax, label="bits recalled (chance 0.5)")
    cs = ax.contour(np.arange(len(r)), np.arange(len(p)), np.array(result["theory"]), levels=[0.75, 0.9],
                    colors=["w", "c"], linewidths=1.2)
    ax.clabel(cs, fmt="theory %.2f", fontsize=7)
    ax.set_xticks(range(len(r)), [f"{x:g}" for x in r])
    ax.set_yticks(range(len(p)), [f"{x:g}" for x in p])
    ax.grid(False)
    ax.set(xlabel="items per channel N/D", ylabel="measurement rate p",
           title=f"recall from one MIPT state, D = {result['D']}")
    return fig


def plot_entropy_vs_p(result: dict) -> Figure:
    """Both entropy proxies against p, from :func:`minimipt.course.theory.entropy_vs_p` (log-scaled p)."""
    fig, ax = _figure()
    p = np.array(result["p"])
    se, sd = np.array(result["state_entropy"]), np.array(result["state_entropy_std"])
    ax.plot(p, result["contribution_entropy"], "o-", label="time contributions H(w)/log L")
    ax.errorbar(p, se, yerr=sd, fmt="s-", capsize=3, label="channels H(|h_d|²/‖h‖²)/log D")
    ax.axhline(result["single_token"], color="k", ls=":", lw=1, label="one token's channel entropy")
    ax.set(xscale="log", ylim=(-0.03, 1.05), xlabel="measurement rate p", ylabel="normalised entropy",
           title=f"spread (volume-law-like) → concentrated (area-law-like); D={result['D']}, L={result['L']}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    return fig


PARTICLE_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def plot_particle_state(p: float = 0.05, D: int = 64, L: int = 128, active: int = 4, seed: int = 0,
                        trials: int = 8, grid: Sequence[float] = PARTICLE_GRID) -> Figure:
    """One state at measurement rate ``p`` (notebook 03's widget): the wave → particle change as ``p`` moves.

    Left: the weights ``p (1 - p)^k`` of the last ``L`` tokens in ``h_L`` by age ``k``. Middle: the channel
    distribution ``|h_d|² / ‖h‖²`` of the final state for sparse tokens
    (:func:`minimipt.course.theory.sparse_tokens`), computed with ``minimipt.mipt_scan``. Right: both
    normalised entropies against ``p`` over ``grid`` (:func:`minimipt.course.theory.entropy_vs_p`, ``trials``
    states per point) with the current ``p`` marked: spread on the wave side, concentrated on the particle side.
    """
    from ..ops import mipt_scan

    if not 0 < float(p) <= 1:
        raise ValueError(f"p must lie in (0, 1], got {p}")
    fig, (ax, ax2, ax3) = _figure(ncols=3, width=13.5, height=3.6)
    w = theory.contribution_weights(float(p), L).numpy()[::-1]  # by age k = 0..L-1
    ax.bar(np.arange(L), w, width=1.0, color="C0")
    t_ent = float(theory.contribution_entropy(float(p), L))
    ax.set(xlabel="age k of a token", ylabel="weight p(1−p)^k", title=f"p = {p:.3f}: time entropy {t_ent:.2f}")
    u = theory.sparse_tokens(1, L, D, active, seed)  # (1, L, D)
    theta = 2 * math.pi * torch.rand(1, L, D, generator=torch.Generator().manual_seed(seed + 1))
    h = mipt_scan(torch.full((1, L, D), float(p)), theta, u)[0, -1]  # (D,)
    q = (h.abs() ** 2 / (h.abs() ** 2).sum()).numpy()
    ch_ent = float(theory.state_entropy(h))
    ax2.bar(np.arange(D), q, width=1.0, color="C1")
    ax2.set(xlabel="channel d", ylabel="|h_d|² / ‖h‖²", ylim=(0, max(0.3, float(q.max()) * 1.05)),
            title=f"channel entropy {ch_ent:.2f} (tokens write {active} of {D})")
    curve = theory.entropy_vs_p(grid, D=D, L=L, active=active, trials=trials, seed=seed)
    ax3.plot(curve["p"], curve["contribution_entropy"], "o-", color="C0", ms=4, label="time")
    ax3.plot(curve["p"], curve["state_entropy"], "s-", color="C1", ms=4, label="channels")
    ax3.plot([p, p], [t_ent, ch_ent], "*", color="C3", ms=14, label="this state")
    ax3.axvline(float(p), color="C3", lw=1)
    ax3.set(xscale="log", ylim=(-0.03, 1.05), xlabel="measurement rate p", ylabel="normalised entropy",
            title="wave (spread)  ←  p  →  particle (concentrated)")
    ax3.legend(fontsize=7, loc="lower left")
    return fig
