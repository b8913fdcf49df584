"""``python -m minimipt report``: rebuild the README results table and the result figures from the
committed results files (``results/**/results.json``), never from numbers typed by hand.

Runs are grouped by experiment (the folder under ``results/``) and *variant* (model, cache, write
rule, attention, lengths). Within a variant, the learning rate is chosen by the mean *validation*
metric over seeds (accuracy for classification, loss for language modelling); the held-out metric
of that learning rate is then reported as mean ± sample standard deviation over seeds.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from .env import repo_root
from .fileio import atomic_write_text

__all__ = ["load_runs", "unfinished_runs", "variant_of", "summarise", "render_table", "update_readme", "register"]

START, END = "<!-- results -->", "<!-- /results -->"


def _grid_results(root: str | Path | None):
    """``(path, experiment, results)`` of every ``results.json`` of a reference grid under ``root``
    (default: the repository's ``results/``), complete or not."""
    root = Path(root) if root is not None else repo_root() / "results"
    for path in sorted(root.rglob("results.json")):
        experiment = path.relative_to(root).parts[0]
        if experiment not in _NOT_GRIDS:
            yield path, experiment, json.loads(path.read_text())


def load_runs(root: str | Path | None = None) -> list[dict]:
    """Every complete ``results.json`` under ``root`` (default: the repository's ``results/``)."""
    runs = []
    for path, experiment, res in _grid_results(root):
        if res.get("complete"):
            res["_path"] = str(path)
            res["_experiment"] = experiment
            runs.append(res)
    return runs


_NOT_GRIDS = ("ddp", "bench", "kernel-e2e", "explore")  # own sections; explore: not reference runs


def unfinished_runs(root: str | Path | None = None) -> dict[str, list[str]]:
    """Per experiment, the runs whose ``results.json`` says they did not finish (a call's time ran out):
    ``"name (steps/total steps)"``. They are left out of the tables, and the report says so."""
    out: dict[str, list[str]] = defaultdict(list)
    for path, experiment, res in _grid_results(root):
        if not res.get("complete"):
            out[experiment].append(f"{path.parent.name} ({res.get('steps', '?')}/{res.get('total_steps', '?')} steps)")
    return dict(out)


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


def variant_of(res: dict) -> str:
    """A short human name for what was trained (everything but seed and learning rate)."""
    c = res["config"]
    if c["model"] == "transformer":
        name = f"Transformer ({c.get('attention', 'sdpa')})"
    else:
        k = c.get("cache_slots")
        cache = "no cache" if k == 0 else ("unbounded cache" if k is None else f"cache K={k}")
        if c.get("write_threshold", 0) > 0:
            cache += f", write if w≥{c['write_threshold']}"
        if c.get("write_penalty", 0) > 0:
            cache += f", penalty {c['write_penalty']}"
        name = f"MIPT ({cache})"
    extra = c.get("extra", {}) or {}
    if extra.get("variant"):
        name += f" [{extra['variant']}]"
    if c.get("eval_lengths"):
        name += f", trained at L={c['seq_len']}"
    return name


def _main_metric(res: dict) -> tuple[str, bool]:
    """(metric name, higher is better) for the task."""
    return ("accuracy", True) if res["config"]["task"] != "wikitext" else ("loss", False)


def summarise(runs: list[dict]) -> dict[str, list[dict]]:
    """Per experiment, one row per variant at its selected learning rate."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["_experiment"], variant_of(r), r["config"]["lr"])].append(r)
    by_variant: dict[tuple, dict[float, list[dict]]] = defaultdict(dict)
    for (exp, var, lr), rs in groups.items():
        by_variant[(exp, var)][lr] = rs
    table: dict[str, list[dict]] = defaultdict(list)
    for (exp, var), lrs in sorted(by_variant.items()):
        metric, higher = _main_metric(next(iter(lrs.values()))[0])

        def val_score(rs, seeds=None):
            vals = [r["metrics"].get("val", {}).get(metric) for r in rs if seeds is None or r["seed"] in seeds]
            vals = [v for v in vals if v is not None]
            return statistics.mean(vals) if vals else float("nan")

        # choose on the seeds every candidate learning rate was run with (the sweep seeds)
        common = set.intersection(*({r["seed"] for r in rs} for rs in lrs.values()))
        best_lr = (max if higher else min)(lrs, key=lambda lr: val_score(lrs[lr], common))
        rs = lrs[best_lr]
        row = {"variant": var, "lr": best_lr, "lrs_tried": sorted(lrs), "seeds": sorted(r["seed"] for r in rs),
               "val": val_score(rs), "params": rs[0]["params"], "protocol": rs[0]["task"].get("protocol", ""),
               "hardware": rs[0]["hardware"].get("gpu") or rs[0]["hardware"].get("device"),
               "git_commit": rs[0].get("git_commit"), "wall_time_s": statistics.mean(r["wall_time_s"] for r in rs)}
        # held-out splits; language models also report validation perplexity (the issue asks for both)
        for split in sorted({s for r in rs for s in r["metrics"] if s != "val" or not higher}):
            keys = ("accuracy",) if higher else ("ppl_token", "ppl_word")
            for key in keys:
                vals = [r["metrics"][split][key] for r in rs if key in r["metrics"].get(split, {})]
                if vals:
                    row[f"{split}_{key}"] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0,
                                             len(vals))
        for key in _CACHE_KEYS:
            vals = [r["metrics"]["eval"].get(key) for r in rs if r["metrics"].get("eval", {}).get(key) is not None]
            if vals:
                row[key] = statistics.mean(vals)
        table[exp].append(row)
    return dict(table)


# cache statistics of the held-out evaluation (means over seeds); sparsity = 1 − writes / length
_CACHE_KEYS = ("slots_used_mean", "writes_per_seq", "sparsity")


def _fmt(v) -> str:
    if isinstance(v, tuple):
        m, s, n = v
        return f"{m:.4f} ± {s:.4f} (n={n})" if m < 10 else f"{m:.1f} ± {s:.1f} (n={n})"
    return "" if v is None else str(v)


def render_table(summary: dict[str, list[dict]], unfinished: dict[str, list[str]] | None = None) -> str:
    """Markdown: one table per experiment, with its protocol stated above it (and below it, the
    runs of ``unfinished`` that were left out)."""
    if not summary:
        return "_No AG News, needle or language-model reference runs are committed yet._\n"
    parts = []
    for exp, rows in summary.items():
        metric_cols = sorted({k for r in rows for k in r if re.match(r"(val|eval).*_(accuracy|ppl_token|ppl_word)$", k)},
                             key=lambda k: (not k.startswith("val_"), k))
        extra = [k for k in _CACHE_KEYS if any(k in r for r in rows)]
        parts.append(f"**{exp}** — {rows[0]['protocol']}. Hardware: {rows[0]['hardware']}. "
                     f"Learning rate chosen on validation; held-out metric mean ± sd over seeds.\n")
        head = ["variant", "params (all / non-emb.)", "lr (of)"] + metric_cols + extra
        parts.append("| " + " | ".join(head) + " |")
        parts.append("|" + "---|" * len(head))
        for r in rows:
            cells = [r["variant"], f"{r['params']['total']:,} / {r['params']['non_embedding']:,}",
                     f"{r['lr']:g} ({', '.join(f'{x:g}' for x in r['lrs_tried'])})"]
            cells += [_fmt(r.get(k)) for k in metric_cols]
            cells += [(f"{r[k]:.4f}" if k == "sparsity" else f"{r[k]:.2f}") if k in r else "" for k in extra]
            parts.append("| " + " | ".join(cells) + " |")
        if (unfinished or {}).get(exp):
            parts.append(f"\nNot finished, left out of this table: {', '.join(unfinished[exp])}.")
        parts.append("")
    return "\n".join(parts)


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


def scan_row_label(row: dict) -> str:
    """A scan benchmark row's method name, with its chunk length when it has one: ``chunked (C=32)``."""
    return row["method"] + (f" (C={row['chunk']})" if row.get("chunk") is not None else "")


def bench_tables(root: str | Path | None = None) -> str:
    """The scan benchmark and the length-scaling benchmark (``results/bench/*_h200.json``) as Markdown;
    the scaling table and the kernel's end-to-end table are :mod:`minimipt.results`' (one version each)."""
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
        from . import results  # the notebooks' loader and table (results imports this module)

        out += ["**Length scaling** (`python -m minimipt.bench scaling`): " + results.scaling_table(
            results.load_scaling(scaling))]
    return "\n".join(out)


def targets_markdown(root: str | Path | None = None) -> str:
    """Every issue target with its status (met / missed / not measured) from the committed files."""
    from . import results

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
    from . import results

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
