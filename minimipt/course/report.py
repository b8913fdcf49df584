"""``python -m minimipt report``: write ``docs/results.md`` and its figures from the committed results
files (``results/**/results.json`` and ``results/bench/*.json``), never from numbers typed by hand.

The grids' tables come from :mod:`minimipt.course.runs` (learning rate chosen on validation, held-out
metric over seeds); the benchmarks' tables and the goals from :mod:`minimipt.course.results`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..bench.scan import scan_row_label
from ..env import repo_root
from ..fileio import atomic_write_text
from . import results
from .runs import load_runs, render_table, summarise, unfinished_runs

__all__ = ["results_markdown", "write_report", "register"]


def ddp_table(root: str | Path | None = None) -> str:
    """Tokens/s of the same training on 1 and on N GPUs (``results/ddp/<n>gpu/results.json``)."""
    root = Path(root) if root is not None else repo_root() / "results"
    rows = []
    for path in sorted((root / "ddp").glob("*gpu/results.json")):
        r = json.loads(path.read_text())
        rows.append((r["hardware"]["world_size"], r))
    if not rows:
        return ""
    rows.sort(key=lambda x: x[0])
    base = rows[0][1]["steady_tokens_per_s"] / rows[0][0]
    c = rows[0][1]["config"]
    out = [f"**Multi-GPU (torchrun + DDP)** — {c['task']} `{c['preset']}` preset, {c['model']} "
           f"d_model={c['d_model']}, {c['n_layers']} layers, {rows[0][1]['total_steps']} steps, "
           f"{rows[0][1]['hardware'].get('gpu')}; per-GPU batch fixed (weak scaling); tokens/s after 20 warm-up steps.\n",
           "| GPUs | global batch | tokens/s | speed-up | efficiency | ranks in sync |", "|---|---|---|---|---|---|"]
    for n, r in rows:
        tps = r["steady_tokens_per_s"]
        out.append(f"| {n} | {r['config']['batch_size']} | {tps:,.0f} | {tps / (base * rows[0][0]):.2f}× | "
                   f"{tps / (base * n):.0%} | {r.get('ranks_in_sync', '—')} |")
    return "\n".join(out) + "\n"


def plot_summary(summary: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """One figure per experiment, written to ``out_dir/<experiment>.png``: every seed of each variant
    beside the mean (:func:`minimipt.course.viz_results.plot_seeds`, intervals clipped to the metric's
    range), or for the recall grid accuracy against pairs (:func:`~minimipt.course.viz_results.plot_recall`)."""
    from . import viz_results

    paths = []
    for exp, rows in summary.items():
        metric = next((k[len("eval_"):] for k in rows[0] if k in ("eval_accuracy", "eval_ppl_token")), None)
        if metric is None:
            continue
        if rows[0].get("config", {}).get("task") == "mqar":
            fig = viz_results.plot_recall(rows, title=f"{exp}: held-out query accuracy against key-value pairs")
        else:
            what = "accuracy" if metric == "accuracy" else "perplexity per token"
            fig = viz_results.plot_seeds([r for r in rows if f"eval_{metric}" in r], metric,
                                         title=f"{exp}: held-out {what}, each seed (○) and the mean (◆)")
        path = out_dir / f"{exp}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def bench_tables(root: str | Path | None = None) -> str:
    """The scan benchmark and the length-scaling benchmark (``results/bench/*_h200.json``) as Markdown;
    the scaling table and the kernel's end-to-end table are :mod:`minimipt.course.results`' (one version each)."""
    root = Path(root) if root is not None else repo_root() / "results"
    out = []
    scan = root / "bench" / "scan_h200.json"
    if scan.exists():
        d = json.loads(scan.read_text())
        out += [f"**Scan benchmark** (`python -m minimipt.bench scan`, {d.get('device')}, {d['config']['timer']}; "
                f"copy bandwidth measured in the same run {d.get('copy_bandwidth_TBps', float('nan')):.2f} TB/s; "
                "`peer` = `accelerated_scan.complex.scan` 0.3.1 on precomputed gate and input, `peer+gate` forms them "
                "in PyTorch first, `mipt_scan` is the public entry point with its input checks).\n",
                "| method | (B, D, L) | inputs | forward ms | fwd+bwd ms | floor fwd ms | rel. error |",
                "|---|---|---|---|---|---|---|"]
        for r in d["rows"]:
            if r["method"] == "sequential":
                continue
            out.append(f"| {scan_row_label(r)} | ({r['B']}, {r['D']}, {r['L']}) | {r['dtype']} | {r['fwd_ms']:.3f} | "
                       f"{r['fwd_bwd_ms']:.3f} | {r['fwd_floor_ms']:.3f} | {r['rel_err']:.1e} |")
        out.append("")
    scaling = root / "bench" / "scaling_h200.json"
    if scaling.exists():
        out += ["**Length scaling** (`python -m minimipt.bench scaling`): " + results.scaling_table(
            results.load_scaling(scaling))]
    return "\n".join(out)


def targets_markdown(root: str | Path | None = None) -> str:
    """Every goal with its status (reached / not reached / not measured) from the committed files."""
    root = Path(root) if root is not None else repo_root() / "results"
    lines = []
    for grid in results.GRID_STAGE:
        lines += results.grid_report(grid, root).goals
    scaling = root / "bench" / "scaling_h200.json"
    if scaling.exists():
        lines += results.scaling_goals(results.load_scaling(scaling))
    scan = root / "bench" / "scan_h200.json"
    if scan.exists():
        lines += results.scan_goals(json.loads(scan.read_text()))
    if not lines:
        return ""
    return ("**Goals**, each checked on the mean over seeds of the files below:\n\n" +
            "\n".join(f"* goal: {g['goal']} — **{g['status']}** ({g['measured']})" for g in lines) + "\n")


def results_markdown(root: str | Path | None = None, figures: dict[str, str] | None = None) -> str:
    """The whole results document as Markdown: goals, one table per reference grid (with its figure
    when ``figures`` maps the grid to an image path), multi-GPU, the kernel end to end, benchmarks."""
    root = Path(root) if root is not None else repo_root() / "results"
    summary = summarise(load_runs(root))
    parts = ["# Results", "",
             "Reference runs of this code, regenerated by `python -m minimipt report` from the committed results "
             "files under `results/` (each run folder holds its config, seed, git commit, versions, hardware, "
             "wall time and metrics). Numbers from the paper are not here: the notebooks show them, labelled as "
             "the paper's.", ""]
    goals = targets_markdown(root)
    if goals:
        parts += [goals]
    table = render_table(summary, unfinished_runs(root))
    for exp, image in (figures or {}).items():
        table = table.replace(f"**{exp}** —", f"![{exp}]({image})\n\n**{exp}** —", 1)
    parts += [table]
    e2e = results.kernel_e2e_table(root) if list((root / "kernel-e2e").glob("*/results.json")) else ""
    parts += [extra for extra in (ddp_table(root), e2e, bench_tables(root)) if extra]
    return "\n".join(parts).rstrip() + "\n"


def write_report(root: str | Path | None = None, out: str | Path | None = None, figures: bool = True) -> list[Path]:
    """Write ``out`` (default ``docs/results.md``) and, with ``figures``, one bar chart per grid beside it
    (``docs/figures/<grid>.png``); returns the paths written."""
    root = Path(root) if root is not None else repo_root() / "results"
    out = Path(out) if out is not None else repo_root() / "docs" / "results.md"
    written = []
    images = {}
    if figures:
        for path in plot_summary(summarise(load_runs(root)), out.parent / "figures"):
            images[path.stem] = path.relative_to(out.parent).as_posix()
            written.append(path)
    atomic_write_text(out, results_markdown(root, images))
    return [out, *written]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write docs/results.md and its figures from the committed results files",
        description="Rebuild docs/results.md (tables of every reference grid and benchmark) and docs/figures/*.png "
                    "from the results files under results/. Nothing is typed by hand: every number comes from a "
                    "results file.")
    p.add_argument("--results", default=None, metavar="DIR", help="folder of results files (default: results/)")
    p.add_argument("--out", default=None, metavar="FILE", help="Markdown file to write (default: docs/results.md)")
    p.add_argument("--no-figures", action="store_true", help="write the Markdown only")
    p.set_defaults(func=_run)


def _run(args) -> int:
    for path in write_report(args.results, args.out, figures=not args.no_figures):
        print(f"wrote {path}")
    return 0
