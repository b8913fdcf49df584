"""Measurements that explain a language-model comparison, read from its runs' results files.

Why does one model beat another on one dataset and lose on another? Notebook 09 answers with
numbers from the runs themselves rather than guesses:

* :func:`budget_table`: data size, tokens seen, passes over the data and tokens per parameter;
* :func:`fit_table`: the final training loss against the validation loss (the generalisation gap),
  where the validation loss was lowest, and the learning rate chosen against the ones tried;
* :func:`gap_by_step`: the validation perplexity of each model relative to a reference model, step
  by step (does the gap close, hold or widen as training goes on?).

Inputs are what :func:`minimipt.course.results.grid_report` returns: ``runs`` (variant -> its runs at
the selected learning rate) and ``rows`` (:func:`minimipt.course.runs.summarise`).
"""

from __future__ import annotations

import math
import statistics

__all__ = ["COMPUTE_OPTIMAL_TOKENS_PER_PARAM", "WIKITEXT_TRAIN_WORDS", "budget_table", "fit_table", "gap_by_step"]

#: Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", arXiv 2203.15556): about
#: 20 training tokens per parameter minimise the loss for a fixed compute budget.
COMPUTE_OPTIMAL_TOKENS_PER_PARAM = 20

#: Training-set sizes in words (whitespace tokens) as published with the datasets: Merity et al. 2016,
#: "Pointer Sentinel Mixture Models" (arXiv 1609.07843), table 1.
WIKITEXT_TRAIN_WORDS = {"wikitext-2": 2_088_628, "wikitext-103": 103_227_021}


def _check(runs: dict) -> None:
    if not runs or not all(isinstance(rs, list) and rs for rs in runs.values()):
        raise ValueError("runs must map each variant to a non-empty list of results dicts "
                         "(minimipt.course.results.grid_report(grid).runs)")


def budget_table(runs: dict[str, list[dict]]) -> str:
    """Markdown: per variant, parameters, training tokens in the data, tokens seen (steps × tokens per
    step), passes over the data and tokens seen per parameter (all and non-embedding)."""
    _check(runs)
    lines = ["| variant | params (all / non-emb.) | train tokens in the data | tokens seen | passes | "
             "tokens seen per parameter (all / non-emb.) |", "|---|---|---|---|---|---|"]
    for v, rs in runs.items():
        r = rs[0]
        seen = r["steps"] * r["tokens_per_step"]
        data = r["task"]["train_tokens"]
        p, pn = r["params"]["total"], r["params"]["non_embedding"]
        lines.append(f"| {v} | {p:,} / {pn:,} | {data:,} | {seen:,} | {seen / data:.1f} | "
                     f"{seen / p:.2f} / {seen / pn:.2f} |")
    return "\n".join(lines) + "\n"


def _last_train_loss(r: dict) -> float:
    return r["history"][-1]["train_loss"]


def fit_table(runs: dict[str, list[dict]], rows: list[dict]) -> str:
    """Markdown: per variant (mean over its seeds), the training loss of the last logging interval
    (dropout on), the final validation loss (dropout off), their gap, the step of the lowest logged
    validation loss, and the learning rate chosen against the rates tried (an edge of the sweep
    means the best rate may lie beyond it)."""
    _check(runs)
    by_variant = {r["variant"]: r for r in rows}
    lines = ["| variant | train loss (last interval) | valid loss (final) | valid − train | lowest valid loss at "
             "step | lr chosen (tried) |", "|---|---|---|---|---|---|"]
    for v, rs in runs.items():
        train = statistics.mean(_last_train_loss(r) for r in rs)
        val = statistics.mean(r["metrics"]["val"]["loss"] for r in rs)
        best = [min((e for e in r["history"] if "val" in e), key=lambda e: e["val"]["loss"])["step"] for r in rs]
        row = by_variant.get(v, {})
        lrs = row.get("lrs_tried", [])
        edge = "" if len(lrs) < 2 or row["lr"] not in (lrs[0], lrs[-1]) else ", an edge of the sweep"
        tried = ", ".join(f"{x:g}" for x in lrs)
        lines.append(f"| {v} | {train:.3f} | {val:.3f} | {val - train:+.3f} | {', '.join(map(str, sorted(set(best))))} "
                     f"of {rs[0]['steps']} | {row.get('lr', rs[0]['config']['lr']):g} ({tried}){edge} |")
    return "\n".join(lines) + "\n"


def gap_by_step(runs: dict[str, list[dict]], reference: str, metric: str = "ppl_token") -> dict[str, list[tuple]]:
    """Per variant, ``[(step, its validation metric / the reference's)]`` at every step both logged
    (means over seeds). A ratio below 1: lower perplexity than the reference at that step."""
    _check(runs)
    if reference not in runs:
        raise ValueError(f"reference must be one of the variants {sorted(runs)}, got {reference!r}")

    def curve(rs):
        steps = {}
        for r in rs:
            for e in r["history"]:
                if metric in e.get("val", {}):
                    steps.setdefault(e["step"], []).append(e["val"][metric])
        return {s: statistics.mean(v) for s, v in steps.items() if len(v) == len(rs)}

    ref = curve(runs[reference])
    out = {}
    for v, rs in runs.items():
        c = curve(rs)
        out[v] = [(s, c[s] / ref[s]) for s in sorted(set(c) & set(ref)) if math.isfinite(c[s] / ref[s])]
    return out
