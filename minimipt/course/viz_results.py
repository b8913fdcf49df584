"""Plots of results files for the result notebooks 07-10 (needs the ``course`` extra: matplotlib).

Same conventions as :mod:`minimipt.course.viz`: every function draws on a fresh
:class:`matplotlib.figure.Figure` not registered with pyplot and returns it (tests call them
headless). Inputs are what the loaders return, never numbers typed in:

* a results dict of :func:`minimipt.train.train` (``results.json``): its ``history`` holds
  ``{"step", "train_loss", "lr", "val": {...}}`` entries;
* summary rows of :func:`minimipt.course.runs.summarise` (one per variant; each metric a
  :class:`~minimipt.course.runs.SeedStat`: mean, sd, n and every seed's value);
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
from .recall import recall_cells
from .results import model_label

__all__ = ["plot_curves", "plot_seeds", "plot_recall", "plot_training_scaling", "plot_decode_scaling"]

_STYLE = {"mipt": ("tab:blue", "o"), "sdpa": ("tab:orange", "s"), "naive": ("tab:red", "^")}


def _figure(ncols: int = 1, width: float = 6.4, height: float = 3.6):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols)


def _labelled(runs) -> dict[str, list[dict]]:
    """``runs`` as ``label -> [results dicts]`` (one dict, a list of dicts, or a mapping whose values are
    results dicts or lists of them: several seeds of one variant share a label and a colour)."""
    if isinstance(runs, Mapping) and "history" in runs:
        runs = [runs]
    if isinstance(runs, Mapping):
        items = {label: list(r) if isinstance(r, Sequence) and not isinstance(r, str) else [r]
                 for label, r in runs.items()}
    elif isinstance(runs, Sequence) and not isinstance(runs, str):
        items = {}
        for r in runs:
            if not isinstance(r, Mapping) or "config" not in r:
                raise ValueError("runs must be results dicts of minimipt.train.train (with 'config' and 'history')")
            label = f"{runs_.variant_of(r)}, lr {r['config']['lr']:g}, seed {r['config']['seed']}"
            items[label] = [r]
    else:
        raise ValueError(f"runs must be a results dict, a list of them or a mapping label -> results dict(s); "
                         f"got {type(runs).__name__}")
    if not items or not all(items.values()):
        raise ValueError("runs is empty: pass at least one results dict")
    for label, rs in items.items():
        for r in rs:
            if not isinstance(r, Mapping) or not isinstance(r.get("history"), list):
                raise ValueError(f"run {label!r} has no 'history' list: pass the dict returned by train() or read "
                                 f"from its results.json")
    return items


#: a curve is drawn on a log axis when its largest value is this many times its smallest (or more)
LOG_SPAN = 30.0


def _spans_decades(values) -> bool:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    return bool(v.size) and v.min() > 0 and v.max() / v.min() >= LOG_SPAN


def plot_curves(runs, metric: str | None = None, title: str | None = None) -> Figure:
    """Training curves: left, the training loss (mean over each logging interval) against step;
    right, the validation ``metric`` against step (default: ``accuracy`` for classification and recall,
    ``ppl_token`` for language modelling).

    ``runs``: one results dict, a list of them (labelled by variant, lr and seed), or a mapping
    ``label -> results dict`` or ``label -> [results dicts]`` (the seeds of one variant: one colour,
    one legend entry). A panel whose values span more than :data:`LOG_SPAN` is drawn on a log axis
    (a loss that falls from 5 to 1e-6 is invisible on a linear one); perplexity always is.
    """
    items = _labelled(runs)
    if metric is None:
        first = next(iter(items.values()))[0]
        metric = "ppl_token" if first.get("config", {}).get("task") == "wikitext" else "accuracy"
    fig, (ax, ax2) = _figure(ncols=2, width=10.5, height=3.8)
    losses, vals = [], []
    for i, (label, rs) in enumerate(items.items()):
        color = f"C{i % 10}"
        for j, r in enumerate(rs):
            h = r["history"]
            kw = dict(color=color, lw=1.2 if len(rs) == 1 else 0.9, ms=3 if len(rs) == 1 else 2,
                      label=(label if len(rs) == 1 else f"{label} ({len(rs)} seeds)") if j == 0 else None)
            ax.plot([e["step"] for e in h], [e["train_loss"] for e in h], "-o", **kw)
            losses += [e["train_loss"] for e in h]
            pts = [(e["step"], e["val"][metric]) for e in h if metric in e.get("val", {})]
            if pts:
                vals += [v for _, v in pts]
                ax2.plot(*zip(*pts), "-o", **kw)
    ax.set(xlabel="step", ylabel="training loss", title="training loss (mean per logging interval)")
    if _spans_decades(losses):
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    if vals:
        ax2.set(xlabel="step", ylabel=f"validation {metric.replace('_', ' ')}",
                title=f"validation {metric.replace('_', ' ')}")
        if metric.startswith("ppl") or _spans_decades(vals):
            ax2.set_yscale("log")
        if metric == "accuracy":  # never past the metric's range
            ax2.set_ylim(top=min(ax2.get_ylim()[1], 1.01))
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


#: the range a metric can take: intervals and axes are clipped to it
METRIC_RANGE = {"accuracy": (0.0, 1.0)}
METRIC_NAMES = {"ppl_token": "perplexity per token", "ppl_word": "perplexity per word"}


def _split_name(key: str, metric: str) -> str:
    return "held-out" if key == f"eval_{metric}" else f"held-out, L = {int(key.split('_L')[1].split('_')[0]):,}"


def plot_seeds(rows: list[dict], metric: str = "accuracy", references: Mapping[str, float] | None = None,
               title: str | None = None) -> Figure:
    """Every seed as a point beside the mean: one panel per held-out split that has ``metric``
    (``eval``, ``eval_L2048`` ...), one row per variant of the summary ``rows``
    (:func:`minimipt.course.runs.summarise`). Open circles: the seeds; diamond: their mean; bar: ± one
    sample sd, clipped to the metric's range (:data:`METRIC_RANGE`: accuracy in [0, 1]) and drawn only
    with two seeds or more. ``references``: ``label -> value`` as dashed vertical lines.
    """
    if not rows:
        raise ValueError("rows is empty: no summary rows to plot (is the grid committed?)")
    keys = _metric_keys(rows, metric)
    if not keys:
        raise ValueError(f"no row has a held-out '{metric}' (keys like eval_{metric}); "
                         f"metrics present: {sorted(k for r in rows for k in r if k.startswith('eval'))}")
    lo_range, hi_range = METRIC_RANGE.get(metric, (0.0, math.inf))
    fig = Figure(figsize=(3.2 + 3.0 * len(keys), 0.9 + 0.38 * len(rows)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(keys), sharey=True))
    y = np.arange(len(rows))
    for ax, key in zip(axes, keys):
        seen = []
        for i, r in enumerate(rows):
            if key not in r:
                continue
            st = r[key]
            vals = np.asarray(st.values, dtype=float)
            seen += list(vals)
            jitter = np.linspace(-0.18, 0.18, len(vals)) if len(vals) > 1 else np.zeros(1)  # seeds side by side
            ax.plot(vals, y[i] + jitter, "o", mfc="none", color=f"C{i % 10}", ms=5)
            if st.n > 1:
                ax.plot([max(lo_range, st.mean - st.sd), min(hi_range, st.mean + st.sd)], [y[i], y[i]], "-",
                        color=f"C{i % 10}", lw=2, alpha=0.6)
            ax.plot([st.mean], [y[i]], "D", color=f"C{i % 10}", ms=6)
        for j, (label, v) in enumerate((references or {}).items()):
            ax.axvline(v, ls="--", lw=1, color="0.4" if j == 0 else f"C{(len(rows) + j) % 10}", label=label)
            seen.append(v)
        if seen and metric in METRIC_RANGE:  # room for the markers, but no tick past the metric's range
            span = max(max(seen) - min(seen), 0.05)
            left, right = max(lo_range, min(seen) - 0.15 * span), min(hi_range, max(seen)) + 0.05 * span
            ax.set_xlim(left, right)
            ax.set_xticks([t for t in ax.get_xticks() if left <= t <= min(right, hi_range)])
        ax.set_xlabel(f"{_split_name(key, metric)} {METRIC_NAMES.get(metric, metric)}")
        ax.grid(axis="x", alpha=0.3)
        if references:
            ax.legend(fontsize=7, loc="best")
    axes[0].set_yticks(y, [f"{r['variant']}  (n={len(r['seeds'])})" for r in rows], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title or "each seed (○), mean (◆), ± 1 sd (bar, 2+ seeds); learning rate chosen on validation",
                 fontsize=9)
    return fig


def plot_recall(rows: list[dict], title: str | None = None) -> Figure:
    """Multi-query associative recall: held-out accuracy against the number of key-value pairs, one
    panel per sequence length L, one line per model (through the means; every seed an open circle).
    ``rows``: summary rows of the ``mqar`` grid (:func:`minimipt.course.runs.summarise`, variants named
    ``"…, L=…, pairs=…"``). Dotted vertical lines mark each cached model's K slots, the dashed grey
    curve 1/pairs (guessing among the sequence's values).
    """
    cells = recall_cells(rows)  # model -> (L, pairs) -> summary row
    lengths = sorted({L for by_cell in cells.values() for L, _ in by_cell})
    models = sorted(cells, key=lambda m: (m.startswith("MIPT"), "cache K=" in m, len(m), m))
    fig = Figure(figsize=(3.6 * len(lengths) + 0.6, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(lengths), sharey=True))
    all_pairs = sorted({P for by_cell in cells.values() for _, P in by_cell})
    for ax, L in zip(axes, lengths):
        for i, m in enumerate(models):
            pts = sorted((P, r["eval_accuracy"]) for (L_, P), r in cells[m].items() if L_ == L)
            if not pts:
                continue
            color = f"C{i % 10}"
            ax.plot([p for p, _ in pts], [st.mean for _, st in pts], "-D", color=color, ms=5, label=m)
            for p, st in pts:
                ax.plot([p] * st.n, st.values, "o", mfc="none", color=color, ms=5)
            k = next(iter(cells[m].values()))["config"]["cache_slots"]
            if k:
                ax.axvline(k, ls=":", lw=1.2, color=color)
        ax.plot(all_pairs, [1 / p for p in all_pairs], "--", color="0.5", lw=1, label="1 / pairs")
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_pairs, [str(p) for p in all_pairs])
        ax.set(xlabel="key-value pairs", title=f"L = {L:,}", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out query accuracy")
    axes[-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(title or "recall accuracy against pairs: each seed (○), mean (◆ and line); dotted: K slots",
                 fontsize=9)
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


def plot_decode_scaling(scaling: Mapping, latency: bool = True) -> Figure:
    """Left: milliseconds per generated token against the context length n already seen (batch 1).
    Right: the streaming state's size (MB) against n: constant for MIPT, linear for a KV cache.
    ``latency=False``: the state panel only (for a shared CPU, whose timings measure its load)."""
    _check_scaling(scaling)
    if latency:
        fig, (ax, ax2) = _figure(ncols=2, width=11.0, height=4.0)
    else:
        fig, ax2 = _figure(ncols=1, width=6.0, height=4.0)
    state = _series(scaling["decode"], "n", "state_mb")
    if latency:
        for i, (model, (xs, ys, _)) in enumerate(_series(scaling["decode"], "n", "ms_per_token").items()):
            color, marker = _style(model, i)
            ax.semilogx(xs, ys, "-" + marker, color=color, label=model_label(model))
        ax.set(xlabel="context n (tokens already seen)", ylabel="ms per token", title="decode latency, batch 1")
        ax.set_ylim(0, None)
        ax.legend(fontsize=7)
    for i, (model, (xs, ys, _)) in enumerate(state.items()):
        color, marker = _style(model, i)
        ax2.loglog(xs, ys, "-" + marker, color=color, label=model_label(model))
    ax2.set(xlabel="context n (tokens already seen)", ylabel="state / KV cache (MB)",
            title="streaming state size")
    ax2.legend(fontsize=7)
    hw = scaling.get("hardware", {})
    fig.suptitle(f"{scaling.get('file', 'scaling benchmark')} — {hw.get('gpu') or hw.get('device', '')}", fontsize=9)
    return fig
