"""Plotting functions for the mechanics notebooks 04-06: the layer, the scan, the cache.

Same conventions as :mod:`minimipt.course.viz` (needs the ``course`` extra: matplotlib): each function
computes what it shows through :mod:`minimipt.course.analysis` (or takes that module's result), draws on
a fresh :class:`matplotlib.figure.Figure` not registered with pyplot, and returns it, so that
``ipywidgets.interact(fn, ...)`` redraws on every slider move and tests can call it headless.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from . import analysis

__all__ = [
    "plot_gate_trajectory",
    "plot_layer_memory_kernel",
    "plot_gate_numerics",
    "plot_scan_error",
    "plot_cache_membership",
    "plot_chunk_tradeoff",
]


def _figure(ncols: int = 1, width: float = 6.4, height: float = 3.6, **kw):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols, **kw)


def plot_gate_trajectory(p_bias: float = -3.0, theta_bias: float = 0.3, L: int = 64,
                         second_at: int | None = 24) -> Figure:
    """One channel of a :class:`minimipt.MIPTLayer` whose gate and phase see only their biases
    (notebook 04's widget; :func:`minimipt.course.analysis.impulse_trajectory`).

    Left: the state ``h_t`` in the complex plane after an impulse at ``t = 0`` (and a second one at
    ``second_at``): a spiral turning by ``θ = b_θ`` per step and shrinking by ``1 − p``,
    ``p = σ(b_p)``. Right: ``|h_t|`` on a log scale with the single-impulse theory ``p (1 − p)^t`` and
    the memory length ``1/p``.
    """
    if second_at is not None and not 0 < second_at < L:
        raise ValueError(f"second_at must lie in (0, L={L}) or be None, got {second_at}")
    impulses = [(0, 1.0)] + ([(second_at, 1.0)] if second_at is not None else [])
    tr = analysis.impulse_trajectory(p_bias, theta_bias, L, impulses)
    h, p = tr["h"].numpy(), tr["p"]
    fig, (ax, ax2) = _figure(ncols=2, width=10.5, height=4.0)
    t = np.arange(L)
    ax.plot(h.real, h.imag, "-", color="0.7", lw=1, zorder=1)
    sc = ax.scatter(h.real, h.imag, c=t, cmap="viridis", s=14, zorder=2)
    fig.colorbar(sc, ax=ax, label="step t")
    r = max(float(np.abs(h).max()), 1e-12) * 1.1
    ax.set(xlim=(-r, r), ylim=(-r, r), aspect="equal", xlabel="Re h_t", ylabel="Im h_t",
           title=f"b_p = {p_bias:.2f} → p = {p:.3g};  b_θ = {theta_bias:.2f} rad/step")
    ax2.semilogy(t, np.abs(h), "o", ms=3, label="|h_t| (MIPTLayer)")
    ax2.semilogy(t, p * (1 - p) ** t, "-", lw=1, label="p (1 − p)^t (one impulse)")
    if tr["memory"] < L:
        ax2.axvline(tr["memory"], color="C3", ls=":", label=f"memory length 1/p = {tr['memory']:.0f}")
    ax2.set(xlabel="step t", ylabel="|h_t|", ylim=(max(1e-12, p * (1 - p) ** L / 3), 2.0),
            title="modulus: the rotation does not change it")
    ax2.legend(fontsize=8)
    return fig


def plot_layer_memory_kernel(p_inits: Sequence[tuple[float, float]] = ((1e-3, 0.1), (1e-2, 0.3), (0.1, 0.5)),
                             L: int = 256, d_model: int = 64, seed: int = 0) -> Figure:
    """Memory kernels ``∏_{r=1}^{k}(1 − p_r)`` of fresh layers for several ``p_init`` ranges
    (:func:`minimipt.course.analysis.layer_memory_kernel` on one random input): the median over channels
    (line) and the band between the 10th and 90th percentile channels (shaded)."""
    from ..layer import MIPTLayer

    fig, ax = _figure()
    x = torch.randn(1, L, d_model, generator=torch.Generator().manual_seed(seed))
    for i, rng in enumerate(p_inits):
        torch.manual_seed(seed + i)
        layer = MIPTLayer(d_model, p_init=tuple(rng))
        kern = analysis.layer_memory_kernel(layer, x).numpy()  # (L, D)
        lo, mid, hi = np.quantile(kern, [0.1, 0.5, 0.9], axis=1)
        ax.plot(np.arange(L), mid, color=f"C{i}", label=f"p_init = ({rng[0]:g}, {rng[1]:g})")
        ax.fill_between(np.arange(L), np.maximum(lo, 1e-30), hi, color=f"C{i}", alpha=0.2)
    ax.set(yscale="log", ylim=(1e-6, 1.5), xlabel="steps k after a token",
           ylabel="surviving fraction ∏(1 − p_r)", title=f"memory kernel of untrained layers (d = {d_model})")
    ax.legend(fontsize=8)
    return fig


def plot_gate_numerics(z_min: float = -120.0, z_max: float = 60.0, dtype: torch.dtype = torch.float32) -> Figure:
    """``log p`` and ``log(1 − p)`` from gate logits ``z``: naive (``log(sigmoid(z))``,
    ``log(1 − sigmoid(z))``) against ``logsigmoid(z)`` and ``logsigmoid(−z)``, in ``dtype``.
    Where the naive curve leaves the plot it is ``−inf`` (or exactly 0 where it should be tiny)."""
    z = torch.linspace(z_min, z_max, 721, dtype=dtype)
    naive = (torch.log(torch.sigmoid(z)), torch.log(1 - torch.sigmoid(z)))
    stable = (F.logsigmoid(z), F.logsigmoid(-z))
    fig, axes = _figure(ncols=2, width=10.5, height=3.6)
    for ax, nv, st, name in zip(axes, naive, stable, ("log p", "log(1 − p)")):
        ax.plot(z, st, lw=3, alpha=0.5, label="logsigmoid")
        finite = torch.isfinite(nv)
        ax.plot(z[finite], nv[finite], "--", color="C3", label="log(sigmoid) (naive)")
        bad = ~finite
        if bad.any():
            ax.axvspan(float(z[bad].min()), float(z[bad].max()), color="C3", alpha=0.08, label="naive gives −inf")
        ax.set(xlabel="gate logit z", ylabel=name, title=f"{name} in {str(dtype).replace('torch.', '')}")
        ax.legend(fontsize=8)
    return fig


def plot_scan_error(result: dict) -> Figure:
    """Relative error against length from :func:`minimipt.course.analysis.scan_error_vs_length`: one colour per
    method, solid float32, dashed float64; NaN/inf results are drawn as crosses on the top edge."""
    fig, ax = _figure(width=7.0, height=4.2)
    L = np.array(result["L"])
    methods = list(dict.fromkeys(m for m, _ in result["error"]))
    finite_max = max([e for v in result["error"].values() for e in v if math.isfinite(e)] + [1e-6])
    top = 10 ** math.ceil(math.log10(finite_max) + 1)
    for (method, dt), errs in result["error"].items():
        c = f"C{methods.index(method)}"
        e = np.array(errs, dtype=float)
        ok = np.isfinite(e)
        ls = "-" if dt == "float32" else "--"
        ax.plot(L[ok], e[ok], ls, marker="o", ms=4, color=c, label=f"{method}, {dt}")
        if (~ok).any():
            ax.plot(L[~ok], np.full((~ok).sum(), top), "x", ms=10, mew=2, color=c)
    ax.axhline(top, color="k", lw=0.5)
    ax.text(L[0], top * 0.55, "NaN / inf", fontsize=8, va="top")
    ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="relative error vs float64 loop",
           title=f"whole-sequence closed forms vs chunked (B={result['B']}, D={result['D']}, p in {result['p_range']})")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, ncol=2, loc="center left")
    return fig


def plot_cache_membership(K: int | None = 8, threshold: float = 0.0, L: int = 64, D: int = 32,
                          contrast: float = 2.0, noise: float = 0.5, seed: int = 0) -> Figure:
    """Which keys each query reads in the causal sparse cache (notebook 06's widget).

    A synthetic gate (:func:`minimipt.course.analysis.synthetic_log_p` with ``contrast`` and channel
    ``noise``) gives write scores ``w_t``
    (top panel, eligible tokens ``w ≥ τ`` filled). Middle: the membership mask
    (:func:`minimipt.course.analysis.cache_membership`), row t = query, column s = key, dark = readable.
    Bottom: slots in use at each t (``≤ K``).
    """
    if K is not None and (not isinstance(K, int) or K < 1):
        raise ValueError(f"K must be an int >= 1 or None (unbounded), got {K!r}")
    log_p = analysis.synthetic_log_p(L, D, contrast=contrast, noise=noise, seed=seed)
    m = analysis.cache_membership(log_p, K, threshold)
    w = m["log_w"][0].exp().numpy()
    el = m["eligible"][0].numpy()
    fig = Figure(figsize=(6.0, 8.2), layout="constrained")
    ax0, ax1, ax2 = fig.subplots(3, 1, sharex=True, height_ratios=[1, 3.2, 1])
    s = np.arange(L)
    ax0.vlines(s, 0, w, color="0.6", lw=1)
    ax0.scatter(s[el], w[el], s=14, color="C0", zorder=3, label="eligible (w ≥ τ)")
    ax0.scatter(s[~el], w[~el], s=14, facecolor="w", edgecolor="0.5", zorder=3, label="not eligible")
    if threshold > 0:
        ax0.axhline(threshold, color="C3", ls=":", lw=1, label=f"τ = {threshold:g}")
    ax0.set(yscale="log", ylabel="write score w_s")
    ax0.legend(fontsize=7, loc="upper right", ncol=3)
    ax1.imshow(m["held"][0].numpy(), cmap="Greys", origin="upper", aspect="auto", interpolation="nearest",
               extent=(-0.5, L - 0.5, L - 0.5, -0.5))
    ax1.plot(s, s, color="C3", lw=0.6, alpha=0.6)  # the causal boundary s = t
    ax1.set(ylabel="query position t", title=f"readable keys, K = {K}, τ = {threshold:g} "
            f"({int(m['held'][0].sum())} of {L * (L + 1) // 2} causal pairs)")
    ax1.grid(False)
    ax2.step(s, m["used"][0].numpy(), where="mid", color="C2")
    if K is not None:
        ax2.axhline(K, color="k", ls=":", lw=1)
    ax2.set(xlabel="key position s  (and t for the slot count)", ylabel="slots used")
    return fig


def plot_chunk_tradeoff(chunk: int = 16, dtype: str = "float32", L: int = 1024, B: int = 2, D: int = 32,
                        chunks: Sequence[int] = (2, 4, 8, 16, 32, 64, 128, 256), repeats: int = 3) -> Figure:
    """The chunk length ``C`` of the chunked scan against its error and its CPU time (notebook 05's widget).

    Both panels come from :func:`minimipt.course.analysis.chunk_tradeoff` over ``chunks`` (which must hold
    ``chunk``) in ``dtype`` (``"float32"`` or ``"float64"``): left, the relative error against a float64
    loop; right, the forward time on this machine with the loop's for scale. The chosen ``C`` is marked.
    """
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    chunks = sorted({int(c) for c in chunks} | {int(chunk)})
    r = analysis.chunk_tradeoff(chunks, dtypes[dtype], L=L, B=B, D=D, repeats=repeats)
    i = r["chunk"].index(int(chunk))
    fig, (ax, ax2) = _figure(ncols=2, width=10.5, height=3.6)
    err = np.array(r["error"])
    floor = err[err > 0].min() / 10 if (err > 0).any() else torch.finfo(dtypes[dtype]).eps
    shown = np.where(err > 0, err, floor)  # an error of exactly 0 cannot sit on a log axis: drawn at the floor
    ax.plot(r["chunk"], shown, "-", color="C0")
    ax.plot(np.array(r["chunk"])[err > 0], err[err > 0], "o", color="C0", label="relative error")
    if (err == 0).any():
        ax.plot(np.array(r["chunk"])[err == 0], shown[err == 0], "v", color="C0", ms=8, label="0 (the loop's bits)")
    ax.plot([chunk], [shown[i]], "o", ms=12, mfc="none", mec="C3", mew=2)
    ax.set(xscale="log", yscale="log", xlabel="chunk length C", ylabel="relative error vs float64 loop",
           ylim=(floor / 3, shown.max() * 10), title=f"{dtype}, L = {L}: error {r['error'][i]:.1e} at C = {chunk}")
    ax.legend(fontsize=8)
    ax.set_xticks(r["chunk"], [str(c) for c in r["chunk"]])
    ax.minorticks_off()
    ax2.plot(r["chunk"], r["ms"], "o-", color="C1", label="chunked forward")
    ax2.axhline(r["sequential_ms"], color="k", ls=":", label=f"loop forward ({r['sequential_ms']:.1f} ms)")
    ax2.plot([chunk], [r["ms"][i]], "o", ms=12, mfc="none", mec="C3", mew=2)
    ax2.set(xscale="log", ylim=(0, 1.1 * max(max(r["ms"]), r["sequential_ms"])), xlabel="chunk length C",
            ylabel="ms on this CPU (median)",
            title=f"B = {B}, D = {D}: {r['ms'][i]:.2f} ms at C = {chunk}")
    ax2.set_xticks(r["chunk"], [str(c) for c in r["chunk"]])
    ax2.minorticks_off()
    ax2.legend(fontsize=8)
    return fig
