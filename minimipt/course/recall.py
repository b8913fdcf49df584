"""Reading the multi-query associative recall grid: a table, and the capacity prediction tested.

The prediction (notebook 08): a MIPT layer without a cache stores the pairs superposed in its
``D = d_model`` complex channels, so its recall should fail once the pairs outnumber ``D``; a cache
of ``K`` slots keeps ``K`` tokens verbatim, so a cached model should recall about ``K`` pairs (more
if its state holds some too). A Transformer keeps every token: its recall should not depend on the
number of pairs, only on training.

:func:`recall_cells` groups the summary rows by model and cell; :func:`recall_table` lays the
held-out accuracies out as model × (L, pairs); :func:`capacity_checks` tests the prediction cell by cell and says, for each model and length, whether the measurements
agree with it, contradict it, or cannot decide it (a capacity no tested pair count crosses, or a
model that does not solve even the easiest cell).
"""

from __future__ import annotations

from . import runs as runs_

__all__ = ["SOLVED", "recall_cells", "recall_table", "capacity_checks", "format_checks"]

#: held-out query accuracy at or above which a cell counts as recalled
SOLVED = 0.9


def recall_cells(rows: list[dict]) -> dict[str, dict[tuple[int, int], dict]]:
    """model -> (L, pairs) -> summary row, for the recall rows of ``rows``."""
    out: dict[str, dict[tuple[int, int], dict]] = {}
    for r in rows:
        c = r.get("config", {})
        if c.get("task") == "mqar" and "eval_accuracy" in r:
            out.setdefault(runs_.variant_of(r, cell=False), {})[(c["seq_len"], c["n_pairs"])] = r
    if not out:
        raise ValueError("rows has no recall (task 'mqar') row with a held-out accuracy: pass "
                         "minimipt.course.results.grid_report('mqar').rows")
    return out


def recall_table(rows: list[dict]) -> str:
    """Markdown: one row per model, one column per (L, pairs) cell: held-out query accuracy (mean over
    seeds; ``n`` when more than one), the learning rate chosen on validation in brackets."""
    cells = recall_cells(rows)
    keys = sorted({k for m in cells.values() for k in m})
    lines = ["| model | " + " | ".join(f"L = {L:,}, {P} pairs" for L, P in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for model, by_cell in cells.items():
        out = []
        for k in keys:
            r = by_cell.get(k)
            if r is None:
                out.append("—")
                continue
            st = r["eval_accuracy"]
            out.append(f"{st.mean:.3f}" + (f" (n={st.n})" if st.n > 1 else "") + f" [lr {r['lr']:g}]")
        lines.append(f"| {model} | " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def _capacity(row: dict) -> tuple[str, int | None]:
    c = row["config"]
    if c["model"] == "transformer":
        return "every token (attention)", None
    k = c.get("cache_slots")
    if not k:
        return f"D = {c['d_model']} state channels", c["d_model"]
    return f"K = {k} slots (+ D = {c['d_model']} state channels)", k


def capacity_checks(rows: list[dict], solved: float = SOLVED) -> list[dict]:
    """One check per (model, L): ``{"model", "L", "capacity", "accuracy": {pairs: mean}, "verdict", "why"}``.

    ``verdict``: ``"agrees"`` (recalled at every pair count ≤ the capacity, not recalled above it),
    ``"contradicts"`` (a pair count ≤ the capacity not recalled, or one above it recalled, when the
    model recalls its easiest cell), or ``"cannot tell"`` (the model recalls no cell of this length:
    training, not capacity, limits it; or no tested pair count lies above the capacity). The
    Transformer's prediction is "recalls every pair count".
    """
    out = []
    for model, by_cell in recall_cells(rows).items():
        for L in sorted({L for L, _ in by_cell}):
            accs = {P: by_cell[(L, P)]["eval_accuracy"].mean for (LL, P) in sorted(by_cell) if LL == L}
            desc, cap = _capacity(next(iter(by_cell.values())))
            ok = {P: a >= solved for P, a in accs.items()}
            if not any(ok.values()):
                verdict, why = "cannot tell", f"no pair count reaches {solved:g}: training, not capacity, limits it"
            elif cap is None:
                bad = [P for P, good in ok.items() if not good]
                verdict = "agrees" if not bad else "contradicts"
                why = "recalls every pair count tested" if not bad else f"does not recall {bad} pairs"
            else:
                below = [P for P, good in ok.items() if P <= cap and not good]
                above = [P for P, good in ok.items() if P > cap and good]
                if below or above:
                    verdict = "contradicts"
                    why = "; ".join(filter(None, [f"fails at {below} pairs (≤ capacity)" if below else "",
                                                  f"recalls {above} pairs (> capacity)" if above else ""]))
                elif all(P <= cap for P in accs):
                    verdict, why = "cannot tell", "recalls every pair count tested; none exceeds the capacity"
                else:
                    verdict, why = "agrees", "recalls up to the capacity, fails beyond it"
            out.append({"model": model, "L": L, "capacity": desc, "accuracy": accs, "verdict": verdict, "why": why})
    return out


def format_checks(checks: list[dict]) -> str:
    """Markdown bullets, one per check."""
    return "\n".join(
        f"* **{c['model']}**, L = {c['L']:,}, capacity {c['capacity']}: accuracy "
        + ", ".join(f"{a:.2f} at {P}" for P, a in c["accuracy"].items())
        + f" pairs — **{c['verdict']}** ({c['why']})" for c in checks) + "\n"
