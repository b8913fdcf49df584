"""``python -m minimipt report``: rebuild the README results table and the result figures from the
committed results files (``results/**/results.json``), never from numbers typed by hand.

Runs are grouped by experiment (the folder under ``results/``) and *variant* (model, cache, write
rule, attention, lengths). Within a variant, the learning rate is chosen by the mean *validation*
metric over seeds (accuracy for classification, loss for language modelling); the held-out metric
of that learning rate is then reported as mean ± sample standard deviation over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..bench.scan import scan_row_label
from ..env import repo_root
from ..fileio import atomic_write_text
from . import results
from .runs import load_runs, render_table, summarise, unfinished_runs

__all__ = ["update_readme", "register"]

START, END = "<!-- results -->", "<!-- /results -->"


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


def update_readme(text: str, readme: str | Path | None = None) -> None:
    """Replace the block between ``<!-- results -->`` markers of the README."""
    path = Path(readme) if readme is not None else repo_root() / "README.md"
    body = path.read_text()
    if START not in body or END not in body:
        raise ValueError(f"{path} has no {START} ... {END} block to update")
    pre, rest = body.split(START, 1)
    _, post = rest.split(END, 1)
    atomic_write_text(path, pre + START + "\n" + text.rstrip() + "\n" + END + post)


def plot_summary(summary: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """One bar chart per experiment (held-out metric of each variant, error bars = sd over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for exp, rows in summary.items():
        key = next((k for k in rows[0] if k.startswith("eval") and k.endswith(("accuracy", "ppl_token"))), None)
        if key is None:
            continue
        rows = [r for r in rows if key in r]
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
        means = [r[key][0] for r in rows]
        ax.barh(range(len(rows)), means, xerr=[r[key][1] for r in rows], color="tab:blue", alpha=0.8)
        ax.set_yticks(range(len(rows)), [r["variant"] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(key.replace("_", " "))
        lo = min(means)
        ax.set_xlim(max(0, lo - 0.1) if "accuracy" in key else 0, None)
        ax.set_title(exp, fontsize=10)
        fig.tight_layout()
        path = out_dir / exp / "summary.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
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
    """Every issue target with its status (met / missed / not measured) from the committed files."""
    root = Path(root) if root is not None else repo_root() / "results"
    lines = []
    for grid in results.GRID_STAGE:
        lines += results.grid_report(grid, root).targets
    scaling = root / "bench" / "scaling_h200.json"
    if scaling.exists():
        lines += results.scaling_targets(results.load_scaling(scaling))
    scan = root / "bench" / "scan_h200.json"
    if scan.exists():
        lines += results.scan_targets(json.loads(scan.read_text()))
    if not lines:
        return ""
    return "**Targets** (from the issues; checked against the files below):\n\n" + "\n".join(
        f"* **{t['status']}**: {t['target']}: {t['measured']}" for t in lines) + "\n"


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="rebuild the README results table and figures from results/")
    p.add_argument("--results", default=None, help="folder of runs (default: results/)")
    p.add_argument("--readme", default=None, help="README to update (default: the repository's)")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=_run)


def _run(args) -> int:
    root = Path(args.results) if args.results else repo_root() / "results"
    summary = summarise(load_runs(root))
    text = targets_markdown(root) + "\n" + render_table(summary, unfinished_runs(root))
    e2e = results.kernel_e2e_table(root) if list((root / "kernel-e2e").glob("*/results.json")) else ""
    for extra in (ddp_table(root), e2e, bench_tables(root)):
        if extra:
            text += "\n" + extra
    update_readme(text, args.readme)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(text)
    if not args.no_figures:
        for path in plot_summary(summary, root):
            print(f"wrote {path}")
    return 0
