"""The reference grids' run folders, read and summarised (``results/<grid>/<run>/results.json``).

Runs are grouped by experiment (the folder under ``results/``) and *variant* (model, cache, write
rule, attention, lengths). Within a variant, the learning rate is chosen by the mean *validation*
metric over seeds (accuracy for classification and recall, loss for language modelling); the
held-out metric of that learning rate is then reported over seeds as a :class:`SeedStat`: the mean,
the sample standard deviation (``None`` for one seed: it is undefined, not zero), the number of
seeds and every seed's value, so that tables and figures can show each seed beside the mean.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from ..env import repo_root

__all__ = ["SeedStat", "load_runs", "unfinished_runs", "variant_of", "summarise", "render_table", "format_stat"]


class SeedStat(NamedTuple):
    """One metric over the seeds of a variant: ``mean``, ``sd`` (sample sd; ``None`` when ``n == 1``),
    ``n`` seeds and their ``values`` in seed order."""

    mean: float
    sd: float | None
    n: int
    values: tuple[float, ...]

    @classmethod
    def of(cls, values) -> "SeedStat":
        values = tuple(float(v) for v in values)
        if not values:
            raise ValueError("values is empty: a SeedStat needs at least one seed's value")
        sd = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.mean(values), sd, len(values), values)


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


def variant_of(res: dict, cell: bool = True) -> str:
    """A short human name for what was trained (everything but seed and learning rate). Recall runs
    (task ``mqar``) end with their grid cell, ``", L=…, pairs=…"``, unless ``cell`` is false."""
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
    if cell and c.get("task") == "mqar":
        name += f", L={c['seq_len']}, pairs={c['n_pairs']}"
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
        rs = sorted(lrs[best_lr], key=lambda r: r["seed"])
        row = {"variant": var, "lr": best_lr, "lrs_tried": sorted(lrs), "seeds": sorted(r["seed"] for r in rs),
               "val": val_score(rs), "params": rs[0]["params"], "protocol": rs[0]["task"].get("protocol", ""),
               "hardware": rs[0]["hardware"].get("gpu") or rs[0]["hardware"].get("device"),
               "git_commit": rs[0].get("git_commit"), "wall_time_s": statistics.mean(r["wall_time_s"] for r in rs),
               "config": rs[0]["config"]}
        # held-out splits; language models also report validation perplexity, per token and per word
        for split in sorted({s for r in rs for s in r["metrics"] if s != "val" or not higher}):
            keys = ("accuracy",) if higher else ("ppl_token", "ppl_word")
            for key in keys:
                vals = [r["metrics"][split][key] for r in rs if key in r["metrics"].get(split, {})]
                if vals:
                    row[f"{split}_{key}"] = SeedStat.of(vals)
        for key in _CACHE_KEYS:
            vals = [r["metrics"]["eval"].get(key) for r in rs if r["metrics"].get("eval", {}).get(key) is not None]
            if vals:
                row[key] = statistics.mean(vals)
        table[exp].append(row)
    return dict(table)


# cache statistics of the held-out evaluation (means over seeds); sparsity = 1 − writes / length
_CACHE_KEYS = ("slots_used_mean", "writes_per_seq", "sparsity")
_CACHE_COLUMNS = {"slots_used_mean": "slots held at the end", "writes_per_seq": "writes per sequence",
                  "sparsity": "sparsity (1 − writes / length)"}


def format_stat(v: SeedStat) -> str:
    """``mean ± sd (n=…)``; one seed as its single value (``52.7 (n=1)``), never ``± 0``; seeds that all
    agree as ``1.0000 (all 3 seeds)``. Four decimals below 10 (accuracies), one above (perplexities)."""
    f = (lambda x: f"{x:.4f}") if v.mean < 10 else (lambda x: f"{x:.1f}")
    if v.n == 1:
        return f"{f(v.mean)} (n=1)"
    if f(min(v.values)) == f(max(v.values)):
        return f"{f(v.mean)} (all {v.n} seeds)"
    return f"{f(v.mean)} ± {f(v.sd)} (n={v.n})"


def _fmt(v) -> str:
    if isinstance(v, SeedStat):
        return format_stat(v)
    return "" if v is None else str(v)


def _column(key: str) -> str:
    """A metric key as a column header: ``val_ppl_token`` -> ``valid ppl/token``, ``eval_L2048_accuracy``
    -> ``held-out, L=2048 accuracy``."""
    split, _, metric = key.partition("_")
    length = ""
    if metric.startswith("L") and "_" in metric:
        length, _, metric = metric.partition("_")
        length = f", L={length[1:]}"
    metric = {"ppl_token": "ppl/token", "ppl_word": "ppl/word"}.get(metric, metric)
    return f"{'valid' if split == 'val' else 'held-out'}{length} {metric}"


def render_table(summary: dict[str, list[dict]], unfinished: dict[str, list[str]] | None = None) -> str:
    """Markdown: one table per experiment, with its protocol stated above it (and below it, the
    runs of ``unfinished`` that were left out)."""
    if not summary:
        return "_No AG News, needle or language-model reference runs are committed yet._\n"
    parts = []
    for exp, rows in summary.items():
        metric_cols = sorted({k for r in rows for k in r if re.match(r"(val|eval).*_(accuracy|ppl_token|ppl_word)$", k)},
                             key=lambda k: (not k.startswith("val_"), int(re.search(r"_L(\d+)_", k).group(1))
                                            if "_L" in k else 0, k))
        extra = [k for k in _CACHE_KEYS if any(k in r for r in rows)]
        seeds = sorted({len(r["seeds"]) for r in rows})
        spread = ("one seed per variant: single values, no spread" if seeds == [1] else
                  "mean ± sample sd over seeds (n = seeds)")
        lr = ("learning rate chosen on validation" if any(len(r["lrs_tried"]) > 1 for r in rows)
              else "one learning rate per variant, set before the runs")
        parts.append(f"**{exp}** — {rows[0]['protocol']}. Hardware: {rows[0]['hardware']}. "
                     f"{lr[0].upper() + lr[1:]}; {spread}.\n")
        head = ["variant", "params (all / non-emb.)", "lr (of)"] + [_column(k) for k in metric_cols] + \
            [_CACHE_COLUMNS[k] for k in extra]
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
