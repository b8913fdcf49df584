"""Plots of results files for the result notebooks 07-10 (needs the ``course`` extra: matplotlib).

Same conventions as :mod:`minimipt.course.viz`: every function draws on a fresh
:class:`matplotlib.figure.Figure` not registered with pyplot and returns it (tests call them
headless). Inputs are what the loaders return, never numbers typed in:

* a results dict of :func:`minimipt.train.train` (``results.json``): its ``history`` holds
  ``{"step", "train_loss", "lr", "val": {...}}`` entries;
* summary rows of :func:`minimipt.course.runs.summarise` (one per variant; metric ``(mean, sd, n)``);
* a scaling benchmark (:func:`minimipt.course.results.load_scaling`): ``train`` rows ``{model, N,
  tokens_per_s, peak_mb}`` and ``decode`` rows ``{model, n, ms_per_token, state_mb}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from . import runs as runs_
from .results import model_label

__all__ = ["plot_curves", "plot_summary_bars", "plot_training_scaling", "plot_decode_scaling"]

_STYLE = {"mipt": ("tab:blue", "o"), "sdpa": ("tab:orange", "s"), "naive": ("tab:red", "^")}


def _figure(ncols: int = 1, width: float = 6.4, height: float = 3.6):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols)


def _labelled(runs) -> dict[str, dict]:
    """``runs`` as ``label -> results dict`` (one dict, a list of dicts, or a mapping)."""
    if isinstance(runs, Mapping) and "history" in runs:
        runs = [runs]
    if isinstance(runs, Mapping):
        items = dict(runs)
    elif isinstance(runs, Sequence) and not isinstance(runs, str):
        items = {}
        for r in runs:
            if not isinstance(r, Mapping) or "config" not in r:
                raise ValueError("runs must be results dicts of minimipt.train.train (with 'config' and 'history')")
            label = f"{runs_.variant_of(r)}, lr {r['config']['lr']:g}, seed {r['config']['seed']}"
            items[label] = r
    else:
        raise ValueError(f"runs must be a results dict, a list of them or a mapping label -> results dict; "
                         f"got {type(runs).__name__}")
    if not items:
        raise ValueError("runs is empty: pass at least one results dict")
    for label, r in items.items():
        if not isinstance(r, Mapping) or not isinstance(r.get("history"), list):
            raise ValueError(f"run {label!r} has no 'history' list: pass the dict returned by train() or read "
                             f"from its results.json")
    return items


def plot_curves(runs, metric: str | None = None, title: str | None = None) -> Figure:
    """Training curves: left, the training loss (mean over each logging interval) against step;
    right, the validation ``metric`` against step (default: ``accuracy`` for classification,
    ``ppl_token`` for language modelling).

    ``runs``: one results dict, a list of them (labelled by variant, lr and seed), or a mapping
    ``label -> results dict``.
    """
    items = _labelled(runs)
    if metric is None:
        first = next(iter(items.values()))
        metric = "ppl_token" if first.get("config", {}).get("task") == "wikitext" else "accuracy"
    fig, (ax, ax2) = _figure(ncols=2, width=10.5, height=3.8)
    any_val = False
    for i, (label, r) in enumerate(items.items()):
        color = f"C{i % 10}"
        h = r["history"]
        steps = [e["step"] for e in h]
        ax.plot(steps, [e["train_loss"] for e in h], "-o", ms=3, color=color, label=label)
        pts = [(e["step"], e["val"][metric]) for e in h if metric in e.get("val", {})]
        if pts:
            any_val = True
            ax2.plot(*zip(*pts), "-o", ms=3, color=color, label=label)
    ax.set(xlabel="step", ylabel="training loss", title="training loss (mean per interval)")
    ax.legend(fontsize=7)
    if any_val:
        ax2.set(xlabel="step", ylabel=f"validation {metric.replace('_', ' ')}", title=f"validation {metric}")
        if metric.startswith("ppl"):
            ax2.set_yscale("log")
    else:
        ax2.text(0.5, 0.5, f"no validation '{metric}' in these histories", ha="center", va="center",
                 transform=ax2.transAxes)
        ax2.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _metric_keys(rows: list[dict], metric: str) -> list[str]:
    keys = sorted({k for r in rows for k in r if re.fullmatch(rf"eval(_L\d+)?_{metric}", k)},
                  key=lambda k: int(re.search(r"_L(\d+)_", k).group(1)) if "_L" in k else 0)
    return keys


def plot_summary_bars(rows: list[dict], metric: str = "accuracy", references: Mapping[str, float] | None = None,
                      title: str | None = None) -> Figure:
    """Grouped bars of one experiment's summary rows (:func:`minimipt.course.runs.summarise`): one group
    per held-out split that has ``metric`` (``eval``, ``eval_L2048`` ...), one bar per variant,
    height = mean over seeds, error bar = sample sd, ``n`` = seeds printed above the bar.
    ``references``: ``label -> value`` drawn as dashed horizontal lines (e.g. a baseline).
    """
    if not rows:
        raise ValueError("rows is empty: no summary rows to plot (is the grid committed?)")
    keys = _metric_keys(rows, metric)
    if not keys:
        raise ValueError(f"no row has a held-out '{metric}' (keys like eval_{metric}); "
                         f"metrics present: {sorted(k for r in rows for k in r if k.startswith('eval'))}")
    n_var = len(rows)
    width = 0.8 / n_var
    fig, ax = _figure(width=max(6.4, 1.6 + 1.4 * len(keys) * max(1, n_var / 3)), height=4.0)
    x = np.arange(len(keys))
    lo = math.inf
    for i, r in enumerate(rows):
        means = [r[k][0] if k in r else np.nan for k in keys]
        sds = [r[k][1] if k in r else 0.0 for k in keys]
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, means, width * 0.92, yerr=sds, capsize=3, color=f"C{i % 10}", label=r["variant"])
        for p, k in zip(pos, keys):
            if k in r:
                lo = min(lo, r[k][0] - r[k][1])
                ax.text(p, r[k][0] + r[k][1], f"n={r[k][2]}", ha="center", va="bottom", fontsize=6)
    for j, (label, v) in enumerate((references or {}).items()):
        ax.axhline(v, ls="--", lw=1, color=f"C{(n_var + j) % 10}", label=label)
        lo = min(lo, v)
    names = ["held-out" if k == f"eval_{metric}" else f"held-out, L = {int(k.split('_L')[1].split('_')[0]):,}"
             for k in keys]
    ax.set_xticks(x, names)
    ax.set_ylabel(metric.replace("_", " "))
    if metric == "accuracy" and math.isfinite(lo):
        ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.legend(fontsize=7, loc="lower right" if metric == "accuracy" else "best")
    ax.set_title(title or "mean ± sd over seeds, learning rate chosen on validation", fontsize=9)
    return fig


def _series(rows: list[dict], x: str, y: str) -> dict[str, tuple[list, list, list]]:
    """model -> (x values, y values, x values that ran out of memory)."""
    out: dict[str, tuple[list, list, list]] = {}
    for r in rows:
        xs, ys, oom = out.setdefault(r["model"], ([], [], []))
        if r.get("oom"):
            oom.append(r[x])
        elif r.get(y) is not None:
            xs.append(r[x])
            ys.append(r[y])
    return out


def _style(model: str, i: int):
    return _STYLE.get(model, (f"C{(i + 3) % 10}", "D"))


def _check_scaling(scaling) -> None:
    if not isinstance(scaling, Mapping) or "train" not in scaling or "decode" not in scaling:
        raise ValueError("scaling must be a scaling benchmark result (minimipt.course.results.load_scaling or the JSON "
                         "written by python -m minimipt.bench scaling)")


def plot_training_scaling(scaling: Mapping, reference: Mapping[str, Mapping[int, float]] | None = None) -> Figure:
    """Left: peak training memory (MB) against length N, log-log, out-of-memory lengths marked ×;
    ``reference`` series (``label -> {N: MB}``, e.g. the paper's claims) as hollow dashed markers.
    Right: training tokens/s against N. Memory is measured on CUDA only (on CPU the left panel says so).
    """
    _check_scaling(scaling)
    fig, (ax, ax2) = _figure(ncols=2, width=11.0, height=4.2)
    mem = _series(scaling["train"], "N", "peak_mb")
    speed = _series(scaling["train"], "N", "tokens_per_s")
    any_mem = any(xs for xs, _, _ in mem.values())
    top = max((max(ys) for _, ys, _ in mem.values() if ys), default=1.0)
    for i, (model, (xs, ys, oom)) in enumerate(mem.items()):
        color, marker = _style(model, i)
        if xs:
            ax.loglog(xs, ys, "-" + marker, color=color, label=model_label(model))
        for n in oom:
            ax.plot([n], [top * 1.6], "x", color=color, ms=9, mew=2)
            ax.annotate("OOM", (n, top * 1.6), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    if any(oom for _, _, oom in mem.values()):
        ax.set_ylim(top=top * 5)
    for j, (label, pts) in enumerate((reference or {}).items()):
        n = sorted(pts)
        ax.loglog(n, [pts[k] for k in n], "--o", mfc="none", color=f"C{(j + 6) % 10}", label=label)
    c = scaling.get("config", {})
    if any_mem or reference:
        ax.set(xlabel="sequence length N", ylabel="peak training memory (MB)",
               title=f"memory, d={c.get('d_model')}, {c.get('layers')} layers, batch {c.get('batch')}")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "peak memory is measured on CUDA only", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for i, (model, (xs, ys, oom)) in enumerate(speed.items()):
        color, marker = _style(model, i)
        if xs:
            ax2.loglog(xs, ys, "-" + marker, color=color, label=model_label(model))
    ax2.set(xlabel="sequence length N", ylabel="training tokens / s", title="throughput (forward + backward + AdamW)")
    ax2.legend(fontsize=7)
    hw = scaling.get("hardware", {})
    fig.suptitle(f"{scaling.get('file', 'scaling benchmark')} — {hw.get('gpu') or hw.get('device', '')}", fontsize=9)
    return fig


def plot_decode_scaling(scaling: Mapping) -> Figure:
    """Left: milliseconds per generated token against the context length n already seen (batch 1).
    Right: the streaming state's size (MB) against n: constant for MIPT, linear for a KV cache."""
    _check_scaling(scaling)
    fig, (ax, ax2) = _figure(ncols=2, width=11.0, height=4.0)
    lat = _series(scaling["decode"], "n", "ms_per_token")
    state = _series(scaling["decode"], "n", "state_mb")
    for i, (model, (xs, ys, _)) in enumerate(lat.items()):
        color, marker = _style(model, i)
        ax.semilogx(xs, ys, "-" + marker, color=color, label=model_label(model))
    for i, (model, (xs, ys, _)) in enumerate(state.items()):
        color, marker = _style(model, i)
        ax2.loglog(xs, ys, "-" + marker, color=color, label=model_label(model))
    ax.set(xlabel="context n (tokens already seen)", ylabel="ms per token", title="decode latency, batch 1")
    ax.set_ylim(0, None)
    ax2.set(xlabel="context n (tokens already seen)", ylabel="state / KV cache (MB)",
            title="streaming state size")
    ax.legend(fontsize=7)
    ax2.legend(fontsize=7)
    hw = scaling.get("hardware", {})
    fig.suptitle(f"{scaling.get('file', 'scaling benchmark')} — {hw.get('gpu') or hw.get('device', '')}", fontsize=9)
    return fig
