"""Goals, each checked against the committed results files: ``{"goal", "measured", "status"}``.

``status`` is :data:`REACHED`, :data:`NOT_REACHED` or :data:`NOT_MEASURED` (no committed file has
the number); ``measured`` shows the numbers the status was decided on. A goal states in advance
what a result must show for a claim to hold (e.g. "MIPT K = 4 recalls the needle at length 8,192 with
accuracy ≥ 0.99"); it is checked on the mean over seeds.

* :func:`grid_goals`: the goals of a reference grid, from its summary rows
  (:func:`minimipt.course.runs.summarise`);
* :func:`scaling_goals`: the length-scaling benchmark (``python -m minimipt.bench scaling``);
* :func:`scan_goals`: the scan benchmark (``python -m minimipt.bench scan``);
* :func:`format_goals`: one line per goal.
"""

from __future__ import annotations

from ..ops import CHUNK

__all__ = ["REACHED", "NOT_REACHED", "NOT_MEASURED", "format_goals", "grid_goals", "scan_goals", "scaling_goals"]

REACHED, NOT_REACHED, NOT_MEASURED = "reached", "not reached", "not measured"


def format_goals(goals: list[dict]) -> str:
    """One line per goal: ``goal: <what> — <status> (<measured>)``."""
    return "\n".join(f"goal: {g['goal']} — {g['status']} ({g['measured']})" for g in goals)


def _goal(text: str, value: float | None, ok, shown: str | None = None) -> dict:
    if value is None:
        return {"goal": text, "measured": "no committed run", "status": NOT_MEASURED}
    return {"goal": text, "measured": shown or f"{value:.4f}", "status": REACHED if ok(value) else NOT_REACHED}


def _mean(row: dict | None, key: str) -> float | None:
    if row is None or key not in row:
        return None
    v = row[key]
    return v[0] if isinstance(v, tuple | list) else v


def _find(rows: list[dict], prefix: str) -> dict | None:
    return next((r for r in rows if r["variant"].startswith(prefix)), None)


def _lm_goal(grid: str, rows: list[dict]) -> dict:
    m, t = _mean(_find(rows, "MIPT (cache K=64)"), "eval_ppl_token"), _mean(_find(rows, "Transformer"), "eval_ppl_token")
    ratio = None if m is None or t is None else m / t
    return _goal(f"language model ({grid}), MIPT K = 64: test perplexity within 2% of the same-size Transformer's",
                 ratio, lambda x: x <= 1.02, None if ratio is None else f"{m:.2f} vs {t:.2f} per token: ratio {ratio:.3f}")


def _recall_goal(rows: list[dict]) -> dict:
    """The recall grid is trained long enough when the Transformer solves its easiest cell."""
    tf = [r for r in rows if r["variant"].startswith("Transformer")]
    easy = min(tf, key=lambda r: (r["config"]["n_pairs"], r["config"]["seq_len"]), default=None)
    where = "the easiest cell" if easy is None else \
        f"L = {easy['config']['seq_len']:,}, {easy['config']['n_pairs']} pairs (the easiest cell)"
    return _goal(f"recall, Transformer at {where}: held-out query accuracy ≥ 0.99", _mean(easy, "eval_accuracy"),
                 lambda x: x >= 0.99)


def grid_goals(grid: str, rows: list[dict]) -> list[dict]:
    """The goals of a reference grid, checked against its summary rows (mean over seeds)."""
    out = []
    if grid == "ag_news-offline":
        mipt = [r for r in rows if r["variant"].startswith("MIPT")] or [None]
        for r in mipt:
            name = r["variant"] if r else "MIPT"
            out.append(_goal(f"AG News offline, {name}: held-out accuracy ≥ 0.8805 (TF-IDF + logistic regression, "
                             f"split seed 0)", _mean(r, "eval_accuracy"), lambda x: x >= 0.8805))
    elif grid == "needle-512":
        v = _mean(_find(rows, "MIPT (cache K=4)"), "eval_accuracy")
        out.append(_goal("needle, length 512, MIPT K = 4: accuracy ≥ 0.99", v, lambda x: x >= 0.99))
        unb = [r for r in rows if "unbounded cache" in r["variant"]] or [None]
        for r in unb:
            name = r["variant"] if r else "MIPT (unbounded cache)"
            v = _mean(r, "writes_per_seq")
            out.append(_goal(f"needle, {name}: ≤ 2 tokens written per sequence on average", v,
                             lambda x: x <= 2.0, None if v is None else f"{v:.2f} writes per sequence"))
    elif grid == "needle-long":
        v = _mean(_find(rows, "MIPT (cache K=4)"), "eval_L8192_accuracy")
        out.append(_goal("needle, length 8,192, MIPT K = 4 (trained at 512): accuracy ≥ 0.99", v,
                         lambda x: x >= 0.99))
    elif grid.startswith("wikitext-2"):
        out.append(_lm_goal(grid, rows))
    elif grid == "mqar":
        out.append(_recall_goal(rows))
    return out


def scan_goals(scan: dict, *, shape: tuple[int, int, int] = (32, 512, 8192)) -> list[dict]:
    """The scan's goals against a ``bench scan`` result, float32 inputs at ``shape`` (B, D, L), each
    compared with the peer measured in the same run:

    * "chunked" forward+backward within 3× of the peer's;
    * "triton" forward ≤ 1.0 ms and ≤ 1.3× the memory floor; forward+backward ≤ 3.9 ms and ≥ 1.5×
      faster than the peer's.
    """
    B, D, L = shape
    # "chunked" at its default chunk length (rows of other lengths carry "chunk"; older files have none)
    row = lambda m: next((r for r in scan["rows"] if r["method"] == m and (r["B"], r["D"], r["L"]) == shape  # noqa: E731
                          and r["dtype"] == "float32" and r.get("chunk", CHUNK) == CHUNK), None)
    chunked, triton, peer = row("chunked"), row("triton"), row("peer")
    where = f"(B, D, L) = ({B}, {D}, {L}), float32"
    out = []
    if chunked and peer:
        ratio = chunked["fwd_bwd_ms"] / peer["fwd_bwd_ms"]
        out.append({"goal": f'"chunked" forward+backward within 3× of the peer at {where}',
                    "measured": f"{chunked['fwd_bwd_ms']:.2f} ms vs {peer['fwd_bwd_ms']:.2f} ms ({ratio:.2f}×)",
                    "status": REACHED if ratio <= 3 else NOT_REACHED})
    if triton and peer:
        fwd, floor = triton["fwd_ms"], triton["fwd_floor_ms"]
        out.append({"goal": f'"triton" forward ≤ 1.0 ms and ≤ 1.3× the memory floor at {where}',
                    "measured": f"{fwd:.3f} ms, {fwd / floor:.2f}× the floor ({floor:.3f} ms)",
                    "status": REACHED if fwd <= 1.0 and fwd <= 1.3 * floor else NOT_REACHED})
        fb, speed = triton["fwd_bwd_ms"], peer["fwd_bwd_ms"] / triton["fwd_bwd_ms"]
        out.append({"goal": f'"triton" forward+backward ≤ 3.9 ms and ≥ 1.5× faster than the peer at {where}',
                    "measured": f"{fb:.3f} ms, {speed:.2f}× faster than the peer's {peer['fwd_bwd_ms']:.3f} ms",
                    "status": REACHED if fb <= 3.9 and speed >= 1.5 else NOT_REACHED})
    if not out:
        out.append({"goal": f"scan goals at {where}", "measured": "no such rows in the file",
                    "status": NOT_MEASURED})
    return out


def train_point(scaling: dict, model: str, N: int) -> dict | None:
    return next((r for r in scaling["train"] if r["model"] == model and r["N"] == N), None)


def scaling_goals(scaling: dict, *, memory_n: int = 8192, speed_n: int = 4096, speed_ratio: float = 2.0,
                    decode_range: tuple[int, int] = (1, 65536), flat_tol: float = 0.01) -> list[dict]:
    """The length-scaling goals checked against a scaling result.

    * MIPT peak training memory at ``memory_n`` ≤ the SDPA Transformer's;
    * MIPT training tokens/s at ``speed_n`` ≥ ``speed_ratio`` × the SDPA Transformer's (when
      ``speed_n`` was not measured: "not measured", with the ratios at the lengths that were);
    * MIPT decode state and peak memory flat (within ``flat_tol``, relative) over ``decode_range``.
    """
    out = []
    m, s = train_point(scaling, "mipt", memory_n), train_point(scaling, "sdpa", memory_n)
    text = f"MIPT peak training memory at N = {memory_n:,} ≤ Transformer-SDPA's"
    if m and s and m.get("peak_mb") is not None and s.get("peak_mb") is not None:
        out.append({"goal": text, "measured": f"{m['peak_mb']:,.0f} MB vs {s['peak_mb']:,.0f} MB "
                    f"({m['peak_mb'] / s['peak_mb']:.2f}×)",
                    "status": REACHED if m["peak_mb"] <= s["peak_mb"] else NOT_REACHED})
    else:
        out.append({"goal": text, "measured": f"no memory measurement at N = {memory_n:,} (CUDA only)",
                    "status": NOT_MEASURED})
    text = f"MIPT training tokens/s at N = {speed_n:,} ≥ {speed_ratio:g}× Transformer-SDPA's"
    ratios = {}
    for r in scaling["train"]:
        if r["model"] == "mipt" and not r.get("oom"):
            t = train_point(scaling, "sdpa", r["N"])
            if t and not t.get("oom"):
                ratios[r["N"]] = r["tokens_per_s"] / t["tokens_per_s"]
    shown = ", ".join(f"{n:,}: {v:.2f}×" for n, v in sorted(ratios.items()))
    if speed_n in ratios:
        out.append({"goal": text, "measured": f"{ratios[speed_n]:.2f}× (all lengths: {shown})",
                    "status": REACHED if ratios[speed_n] >= speed_ratio else NOT_REACHED})
    else:
        out.append({"goal": text, "measured": f"N = {speed_n:,} was not in the benchmark; measured ratios at "
                    f"N = {shown or 'none'}", "status": NOT_MEASURED})
    m, t = train_point(scaling, "mipt", speed_n), train_point(scaling, "sdpa", speed_n)
    if m and t and "graph_tokens_per_s" in m and "graph_tokens_per_s" in t:
        g = m["graph_tokens_per_s"] / t["graph_tokens_per_s"]
        out.append({"goal": text.replace("tokens/s", "tokens/s with both steps replayed as CUDA graphs"),
                    "measured": f"{g:.2f}× ({m['graph_tokens_per_s']:,} vs {t['graph_tokens_per_s']:,} tokens/s)",
                    "status": REACHED if g >= speed_ratio else NOT_REACHED})
    lo, hi = decode_range
    text = f"MIPT decode memory flat from {lo:,} to {hi:,} tokens of context"
    pts = sorted((r for r in scaling["decode"] if r["model"] == "mipt" and not r.get("oom")), key=lambda r: r["n"])
    ns = [r["n"] for r in pts]
    if not pts or ns[0] > lo or ns[-1] < hi:
        out.append({"goal": text, "measured": f"contexts measured: {ns or 'none'}", "status": NOT_MEASURED})
    else:
        def flat(key):
            vals = [r[key] for r in pts if r.get(key) is not None]
            return (max(vals) - min(vals) <= flat_tol * max(vals)) if vals else None, vals
        state_ok, states = flat("state_mb")
        peak_ok, peaks = flat("peak_mb")
        ok = state_ok and peak_ok is not False
        desc = f"state {min(states):.4g}–{max(states):.4g} MB" + (
            f", peak {min(peaks):,.1f}–{max(peaks):,.1f} MB" if peaks else ", peak not measured (CPU)")
        out.append({"goal": text, "measured": f"{desc} over n = {ns[0]:,} … {ns[-1]:,}",
                    "status": REACHED if ok else NOT_REACHED})
    return out
