"""Reading the committed results for the result notebooks (07-10): grids, goals, scaling, paper.

Everything here reads files under ``results/`` (or a folder you pass):

* :func:`grid_report`: one reference grid (``results/<grid>/<run>/results.json``, written by
  ``python -m minimipt.course.experiments <grid>``) summarised by :func:`minimipt.course.runs.summarise`, as a
  Markdown table with its protocol, the selected runs (for curves) and its goals checked against the
  measured numbers (:mod:`minimipt.course.goals`); a plain "not run yet" message when no run is committed.
* :func:`load_scaling`, :func:`scaling_table`, :func:`paper_memory_comparison`: the length-scaling
  benchmark (``python -m minimipt.bench scaling``).
* :func:`kernel_e2e_table`: the same LM training with the Triton scan and with ``chunked``.

The paper's numbers and independent baselines (:mod:`minimipt.course.published`) and the goal checks
(:mod:`minimipt.course.goals`) are re-exported here, so a notebook needs one import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import runs as runs_
from ..env import repo_root
from .goals import train_point, format_goals, grid_goals, scaling_goals, scan_goals
from .published import BASELINES, PAPER, PAPER_LABEL, baselines_table, paper_memory_series, paper_table

__all__ = [
    "GRID_STAGE", "PAPER", "BASELINES", "PAPER_LABEL",
    "GridReport", "grid_report", "missing_message", "format_goals",
    "load_scaling", "scaling_table", "scaling_goals", "scan_goals", "paper_memory_comparison",
    "paper_memory_series", "model_label", "kernel_e2e_table", "paper_table", "baselines_table",
]

#: which stage of ``scripts/reference_runs.sh`` produces each grid of :mod:`minimipt.course.experiments`
GRID_STAGE = {"ag_news-offline": "classification", "needle-512": "classification",
              "needle-long": "needle-long", "wikitext-2-offline": "lm", "wikitext-2-3seeds-500steps": "lm-seeds",
              "mqar": "mqar"}

# --------------------------------------------------------------------------------------------
# reference grids


def missing_message(grid: str) -> str:
    """What to say when a grid has no committed run, and how to produce it."""
    stage = GRID_STAGE.get(grid)
    raw = "RAW=<raw data folder> " if stage in ("classification", "lm", "lm-seeds") else ""  # they tokenize raw data
    how = (f"run `{raw}bash scripts/reference_runs.sh {stage}` on a GPU" if stage
           else f"run `python -m minimipt.course.experiments {grid}` on a GPU")
    return f"no committed reference runs for {grid} yet: {how}, then commit `results/{grid}/*/results.json`."


@dataclass
class GridReport:
    """One reference grid as the notebooks show it.

    ``rows``: :func:`minimipt.course.runs.summarise` rows (one per variant, at the learning rate chosen on
    validation); ``runs``: variant -> its runs at that learning rate (for curves); ``markdown``: the
    table with the protocol, or :func:`missing_message`; ``goals``: :func:`minimipt.course.goals.grid_goals`.
    """

    grid: str
    rows: list[dict] = field(default_factory=list)
    runs: dict[str, list[dict]] = field(default_factory=dict)
    markdown: str = ""
    goals: list[dict] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rows


def grid_report(grid: str, root: str | Path | None = None) -> GridReport:
    """Summarise the committed runs of ``grid`` under ``root`` (default: the repository's ``results/``)."""
    if not isinstance(grid, str) or not grid:
        raise ValueError(f"grid must be a grid name such as {sorted(GRID_STAGE)}, got {grid!r}")
    root = Path(root) if root is not None else repo_root() / "results"
    runs = [r for r in runs_.load_runs(root) if r["_experiment"] == grid] if root.is_dir() else []
    rows = runs_.summarise(runs).get(grid, [])
    if not rows:
        return GridReport(grid, markdown=missing_message(grid) + "\n", goals=grid_goals(grid, []))
    chosen = {row["variant"]: [r for r in runs if runs_.variant_of(r) == row["variant"]
                               and r["config"]["lr"] == row["lr"]] for row in rows}
    commits = sorted({str(r.get("git_commit", "?"))[:10] for rs in chosen.values() for r in rs})
    md = runs_.render_table({grid: rows}) + f"\nRuns: {sum(len(v) for v in chosen.values())} at the selected " \
        f"learning rates, code commit(s) {', '.join(commits)}; files under `results/{grid}/`.\n"
    return GridReport(grid, rows, chosen, md, grid_goals(grid, rows))


# --------------------------------------------------------------------------------------------
# the length-scaling benchmark

MODEL_LABELS = {"mipt": "MIPT (no cache)", "mipt-fused": "MIPT, fused mixer kernel",
                "sdpa": "Transformer, SDPA (fused)", "naive": "Transformer, naive (materialised)"}


def model_label(name: str) -> str:
    """Human name of a scaling-benchmark model key (``mipt``, ``mipt-K64``, ``sdpa``, ``naive``)."""
    if name.startswith("mipt-K"):
        return f"MIPT, K = {name[6:]} cache"
    return MODEL_LABELS.get(name, name)


def load_scaling(path: str | Path | None = None) -> dict | None:
    """A scaling benchmark file (default ``results/bench/scaling_h200.json``); ``None`` if absent."""
    path = Path(path) if path is not None else repo_root() / "results" / "bench" / "scaling_h200.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("benchmark") != "scaling" or "train" not in data or "decode" not in data:
        raise ValueError(f"{path} is not a scaling benchmark result (python -m minimipt.bench scaling writes one)")
    return {**data, "file": path.name}


def _protocol(scaling: dict) -> str:
    c = scaling["config"]
    hw = scaling.get("hardware", {})
    return (f"`{scaling.get('file', 'scaling')}`: {hw.get('gpu') or hw.get('device', '?')}, torch "
            f"{scaling.get('torch_version', '?')}, commit {str(scaling.get('git_commit', '?'))[:10]}; language "
            f"models, d_model {c['d_model']}, {c['layers']} layers, batch {c['batch']}, vocabulary {c['vocab']}, "
            f"autocast {c.get('amp') or 'off'}; training step = forward + backward + AdamW, median of repeats; "
            f"peak = memory allocated above the model's own (CUDA only)")


def scaling_table(scaling: dict, timings: bool = True) -> str:
    """Training and decoding tables of a scaling result, with its protocol, as Markdown.

    ``timings=False``: only the streaming state's size per context (exact bytes, the same on any
    machine); for a run on a shared CPU, whose milliseconds measure the machine's load more than the model.
    """
    if not timings:
        lines = [_protocol(scaling), "", "| decoding, batch 1 | context n | state MB |", "|---|---|---|"]
        lines += [f"| {model_label(r['model'])} | {r['n']:,} | {r['state_mb']:.4g} |" for r in scaling["decode"]
                  if not r.get("oom")]
        return "\n".join(lines) + "\n"
    graphs = any(k.startswith("graph_") for r in scaling["train"] for k in r)
    head = "| model | N | ms / step | tokens/s | peak MB |" + (" CUDA graph ms / step | CUDA graph tokens/s |"
                                                             if graphs else "")
    lines = [_protocol(scaling), "", head, "|---" * head.count(" | ") + "|---|"]
    for r in scaling["train"]:
        if r.get("oom"):
            row = f"| {model_label(r['model'])} | {r['N']:,} | out of memory | | |"
        else:
            peak = "—" if r.get("peak_mb") is None else f"{r['peak_mb']:,.0f}"
            row = (f"| {model_label(r['model'])} | {r['N']:,} | {r['ms_per_step']:.2f} | "
                   f"{r['tokens_per_s']:,} | {peak} |")
        if graphs:
            row += (f" {r['graph_ms_per_step']:.2f} | {r['graph_tokens_per_s']:,} |" if "graph_ms_per_step" in r
                    else " not captured | |" if r.get("graph_error") or r.get("graph_skipped")
                    else " out of memory | |" if r.get("graph_oom")
                    else " | |")
        lines.append(row)
    lines += ["", "| decoding, batch 1 | context n | ms / token | state MB | peak MB |", "|---|---|---|---|---|"]
    for r in scaling["decode"]:
        if r.get("oom"):
            lines.append(f"| {model_label(r['model'])} | {r['n']:,} | out of memory | | |")
        else:
            peak = "—" if r.get("peak_mb") is None else f"{r['peak_mb']:,.1f}"
            lines.append(f"| {model_label(r['model'])} | {r['n']:,} | {r['ms_per_token']:.3f} | "
                         f"{r['state_mb']:.4g} | {peak} |")
    return "\n".join(lines) + "\n"


def paper_memory_comparison(scaling: dict) -> str:
    """Peak training memory: the paper's two columns beside our MIPT, naive and SDPA (Markdown)."""
    paper = {row[0]: row[1:] for row in PAPER["memory"]["rows"]}

    def ours(model, N):
        r = train_point(scaling, model, N)
        if r is None:
            return "—"
        return "OOM" if r.get("oom") else ("—" if r.get("peak_mb") is None else f"{r['peak_mb']:,.0f}")

    c = scaling["config"]
    lines = [f"Peak training memory (MB). *Paper* columns: {PAPER_LABEL} (batch and width not stated). "
             f"*Ours*: `{scaling.get('file', 'scaling')}`, d_model {c['d_model']}, {c['layers']} layers, batch "
             f"{c['batch']}, autocast {c.get('amp') or 'off'}.", "",
             "| N | paper MIPT | paper Transformer (naive) | ours MIPT | ours Transformer naive "
             "| ours Transformer SDPA |",
             "|---|---|---|---|---|---|"]
    for N in sorted(set(paper) | {r["N"] for r in scaling["train"]}):
        p = paper.get(N, ("—", "—"))
        lines.append(f"| {N:,} | " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in p) +
                     f" | {ours('mipt', N)} | {ours('naive', N)} | {ours('sdpa', N)} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# the kernel's end-to-end effect


def kernel_e2e_table(root: str | Path | None = None) -> str:
    """``results/kernel-e2e/<scan method>/results.json``: the same training, one row per scan method."""
    root = Path(root) if root is not None else repo_root() / "results"
    paths = sorted((root / "kernel-e2e").glob("*/results.json"))
    if not paths:
        return ("no committed kernel end-to-end runs: run `RAW=<raw data folder> bash scripts/reference_runs.sh "
                "kernel-e2e` on a GPU.\n")
    runs = [json.loads(p.read_text()) for p in paths]
    c, r0 = runs[0]["config"], runs[0]
    lines = [f"**Scan kernel end to end** — {c['task']} `{c['preset']}` preset ({r0['task'].get('protocol', '')}), "
             f"{c['model']} d_model={c['d_model']}, {c['n_layers']} layers, batch {c['batch_size']} × {c['seq_len']} "
             f"tokens, {r0['steps']} steps, {r0['hardware'].get('gpu') or r0['hardware'].get('device')}, commit "
             f"{str(r0.get('git_commit', '?'))[:10]}; steady tokens/s after the first 20 steps. A short "
             f"throughput run, not a trained model: its perplexities only show both methods train alike.", "",
             "| scan method | steady tokens/s | speed-up | wall s | valid ppl/token | test ppl/token |",
             "|---|---|---|---|---|---|"]

    def tps(r):  # steady state when the run was long enough to have one
        return r.get("steady_tokens_per_s") or r.get("train_tokens_per_s") or float("nan")

    base = min(tps(r) for r in runs)
    for r in sorted(runs, key=lambda r: -tps(r)):
        m = r.get("metrics", {})
        lines.append(f"| {r['config']['scan_method']} | {tps(r):,.0f} | {tps(r) / base:.2f}× | "
                     f"{r['wall_time_s']:.1f} | "
                     f"{m.get('val', {}).get('ppl_token', float('nan')):.1f} | "
                     f"{m.get('eval', {}).get('ppl_token', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"
