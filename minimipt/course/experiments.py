"""Reference experiments as named grids of training runs: ``python -m minimipt.course.experiments NAME``.

Each grid expands to runs ``results/<NAME>/<run>/`` (``results.json`` committed; checkpoints are
git-ignored). The runner is resumable and time-bounded: a run whose ``results.json`` is complete is
skipped, one with a checkpoint is resumed, and ``--max-minutes`` stops every run cleanly so a grid
can advance in pieces (e.g. calls of 10 minutes on a lent GPU). Several runs share one GPU in parallel
(``--parallel``): these models are small, and one process cannot fill an H200.

Same tuning effort for every model: each grid gives MIPT and the Transformer the same learning-rate
candidates, seeds, data, schedule, depth and non-embedding parameter budget (models with a cache
get a narrower width so that the cache's projections do not buy them extra parameters).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..env import repo_root

__all__ = ["GRIDS", "expand", "main"]

SEEDS = (0, 1, 2)


def _runs(prefix: str, task: str, preset: str, variants: dict[str, dict], lrs, seeds=SEEDS, common=None,
          sweep_seeds=None):
    """Every (variant, lr, seed). With ``sweep_seeds``, the learning rates are tried on those seeds
    only, and the other seeds run later at the variant's best learning rate by validation metric
    (runs with ``"lr": None`` and ``"stage": "final"``, resolved by :func:`_resolve_finals`)."""
    out = []
    first = seeds if sweep_seeds is None else sweep_seeds
    for (vname, v), lr, seed in itertools.product(variants.items(), lrs, first):
        args = {**(common or {}), **v, "lr": lr}
        out.append({"name": f"{vname}-lr{lr:g}-s{seed}", "variant": vname, "task": task, "preset": preset,
                    "seed": seed, "set": args, "stage": "sweep"})
    if sweep_seeds is not None:
        for (vname, v), seed in itertools.product(variants.items(), [s for s in seeds if s not in sweep_seeds]):
            out.append({"name": None, "variant": vname, "task": task, "preset": preset, "seed": seed,
                        "set": {**(common or {}), **v, "lr": None}, "stage": "final", "lrs": tuple(lrs)})
    return out


def _val_metric(out: Path) -> float | None:
    """Validation score of a finished run (accuracy; minus the loss for language models)."""
    res = out / "results.json"
    if not res.exists():
        return None
    r = json.loads(res.read_text())
    if not r.get("complete"):
        return None
    val = r["metrics"].get("val", {})
    return val.get("accuracy", -val["loss"] if "loss" in val else None)


def _resolve_finals(runs: list[dict], folder: Path) -> list[dict]:
    """Give each pending final-stage run the best learning rate of its variant's finished sweep (or of
    the sweep its ``lr_from`` names)."""
    resolved = []
    for r in runs:
        if r["stage"] != "final":
            resolved.append(r)
            continue
        source = r.get("lr_from", r["variant"])  # a final run may take its rate from another variant's sweep
        sweep = [s for s in runs if s["stage"] == "sweep" and s["variant"] == source]
        scores = {s["set"]["lr"]: _val_metric(folder / s["name"]) for s in sweep}
        if any(v is None for v in scores.values()):
            continue  # the sweep of this variant is not finished yet
        lr = max(scores, key=scores.get)
        resolved.append({**r, "name": f"{r['variant']}-lr{lr:g}-s{r['seed']}", "set": {**r["set"], "lr": lr}})
    return resolved


def _grid_ag_news():
    variants = {
        "mipt": {"model": "mipt", "cache_slots": 0},
        # the cache adds 5 d² per layer: d_model 108 keeps the non-embedding parameters within 1% of
        # the other two (400,468 vs 397,316)
        "mipt-K16": {"model": "mipt", "cache_slots": 16, "d_model": 108},
        "transformer": {"model": "transformer"},
    }
    return _runs("ag", "ag_news", "offline", variants, lrs=(3e-4, 1e-3, 3e-3), sweep_seeds=(0,))


def _grid_needle():
    variants = {
        "mipt-K0": {"model": "mipt", "cache_slots": 0},
        "mipt-K1": {"model": "mipt", "cache_slots": 1},
        "mipt-K4": {"model": "mipt", "cache_slots": 4},
        "mipt-K16": {"model": "mipt", "cache_slots": 16},
        # unbounded capacity: a token is written iff its mean measurement rate w_t >= 0.02 (about the
        # initial mean rate, so writing can start); with a write penalty the gate is pushed to write less
        "mipt-unbounded-penalty": {"model": "mipt", "cache_slots": None, "write_threshold": 0.02,
                                   "write_penalty": 0.1},
        "mipt-threshold-only": {"model": "mipt", "cache_slots": None, "write_threshold": 0.02},
        "transformer": {"model": "transformer"},
    }
    return _runs("needle", "needle", "offline", variants, lrs=(3e-3,))


def _grid_needle_long():
    """Train at 512, test at 2,048 and 8,192 (no position embedding, so lengths transfer)."""
    variants = {
        "mipt-K0": {"model": "mipt", "cache_slots": 0},
        "mipt-K4": {"model": "mipt", "cache_slots": 4},
        "transformer": {"model": "transformer"},
    }
    common = {"pos_embedding": "none", "eval_lengths": [2048, 8192]}
    return _runs("needle-long", "needle", "offline", variants, lrs=(3e-3,), common=common)


def _grid_wikitext():
    variants = {
        "transformer": {"model": "transformer"},
        "mipt-K0": {"model": "mipt", "cache_slots": 0},
        # same parameter budget: 25.2 M non-embedding parameters for the Transformer and MIPT K=0 at
        # d_model 512; the cached variants at d_model 432 have 25.4 M (the cache adds 5 d² per layer)
        "mipt-K16": {"model": "mipt", "cache_slots": 16, "d_model": 432},
        "mipt-K64": {"model": "mipt", "cache_slots": 64, "d_model": 432},
    }
    # the same three learning rates for every model (selection on valid); one seed: ~25 M parameters each
    return _runs("lm", "wikitext", "offline", variants, lrs=(5e-4, 1e-3, 2e-3), seeds=(0,))


#: the shorter-schedule language-model grid: 3 seeds of every variant, each at the learning rate the
#: 1,500-step grid chose on validation (its name carries the schedule so the two cannot be confused)
LM_SEEDS_GRID, LM_SEEDS_STEPS = "wikitext-2-3seeds-500steps", 500
LM_SEEDS_LR = {"transformer": 1e-3, "mipt-K0": 1e-3, "mipt-K16": 2e-3, "mipt-K64": 1e-3}


def _grid_wikitext_seeds():
    """Seeds 0, 1, 2 of the four language models at 500 steps (a third of the 1,500-step schedule, so
    that all twelve runs fit one bounded GPU call; validation every 100 steps for the curves, no
    checkpoint before the end: a call's checkpoints do not outlive it)."""
    variants = {v["variant"]: v["set"] for v in _grid_wikitext() if v["seed"] == 0}
    common = {"max_steps": LM_SEEDS_STEPS, "eval_every": 100, "ckpt_every": LM_SEEDS_STEPS}
    return [run for name, lr in LM_SEEDS_LR.items()
            for run in _runs("lm-seeds", "wikitext", "offline", {name: {k: v for k, v in variants[name].items()
                                                                       if k != "lr"}}, lrs=(lr,), common=common)]


#: the recall grid, in the order it runs: each model's learning rate is swept at the first cell
#: (sequence length, key-value pairs), then the other cells run at the rate that did best there on
#: validation; the pair counts straddle the capacities under test (8 < K = 16 < 32 < K = 64 < 128 = D)
MQAR_SWEEP_CELL, MQAR_CELLS = (128, 8), ((512, 8), (512, 32), (512, 128), (128, 32))
MQAR_LRS, MQAR_TOKENS_PER_STEP = (1e-3, 3e-3), 32_768


def _grid_mqar():
    """Multi-query associative recall over (L, pairs) for the Transformer and MIPT K ∈ {0, 16, 64} at one
    non-embedding budget: 396,800 parameters at d_model 128 for the Transformer and MIPT K = 0; the cache
    adds 5 d² per layer, so the cached models run at d_model 108 (400,032, +0.8%; 4 heads of 27). The
    batch keeps the tokens per step at 32,768 (batch 256 at L = 128, 64 at 512); one seed. The rate is
    swept at L = 128 with 8 pairs, where a step holds the most queries (2,048), so the lookup is learned
    soonest; the cells at L = 512 come next (they test the capacities), L = 128 with 32 pairs last."""
    variants = {
        "transformer": {"model": "transformer"},
        "mipt-K0": {"model": "mipt", "cache_slots": 0},
        "mipt-K16": {"model": "mipt", "cache_slots": 16, "d_model": 108},
        "mipt-K64": {"model": "mipt", "cache_slots": 64, "d_model": 108},
    }

    def cell(L, P):
        return {"seq_len": L, "n_pairs": P, "batch_size": MQAR_TOKENS_PER_STEP // L}

    L0, P0 = MQAR_SWEEP_CELL
    out = _runs("mqar", "mqar", "offline", {f"{v}-L{L0}-P{P0}": s for v, s in variants.items()}, lrs=MQAR_LRS,
                seeds=(0,), common=cell(L0, P0))
    for (L, P), (v, settings) in itertools.product(MQAR_CELLS, variants.items()):
        out.append({"name": None, "variant": f"{v}-L{L}-P{P}", "lr_from": f"{v}-L{L0}-P{P0}", "task": "mqar",
                    "preset": "offline", "seed": 0, "set": {**cell(L, P), **settings, "lr": None}, "stage": "final",
                    "lrs": MQAR_LRS})
    return out


def _grid_smoke():
    variants = {"mipt": {"model": "mipt"}, "transformer": {"model": "transformer"}}
    return _runs("smoke", "needle", "smoke", variants, lrs=(3e-3,), seeds=(0,))


GRIDS = {
    "ag_news-offline": _grid_ag_news,
    "needle-512": _grid_needle,
    "needle-long": _grid_needle_long,
    "wikitext-2-offline": _grid_wikitext,
    LM_SEEDS_GRID: _grid_wikitext_seeds,
    "mqar": _grid_mqar,
    "smoke": _grid_smoke,
}


def expand(name: str) -> list[dict]:
    if name not in GRIDS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(GRIDS)}")
    return GRIDS[name]()


def _command(run: dict, out: Path, max_minutes: float | None, extra_set: list[str]) -> list[str]:
    settings = dict(run["set"])
    cmd = [sys.executable, "-m", "minimipt", "train", run["task"], "--preset", run["preset"],
           "--model", settings.pop("model", "mipt"), "--seed", str(run["seed"]), "--out", str(out), "--quiet"]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    for s in extra_set:
        cmd += ["--set", s]
    if max_minutes:
        cmd += ["--max-minutes", str(max_minutes)]
    if (out / "checkpoint.pt").exists():
        cmd.append("--resume")
    elif (out / "results.json").exists():  # a run stopped before its first checkpoint: start it again
        cmd.append("--overwrite")
    return cmd


def _parse_gpus(text: str | None) -> list[str]:
    if text is None:
        return []
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise ValueError(f"--gpus {text!r}: expected comma-separated device indices such as 0,1")
    return gpus


def _least_busy(gpus: list[str], in_use: list[str | None]) -> str:
    """The device among ``gpus`` with the fewest active runs (the first one on ties)."""
    return min(gpus, key=lambda g: in_use.count(g))


def _status(out: Path) -> str:
    """``done``, ``failed`` (the run stopped on a non-finite loss: not run again, the grid reports it),
    ``partial`` (a checkpoint to resume from) or ``todo``."""
    res = out / "results.json"
    if res.exists():
        r = json.loads(res.read_text())
        if r.get("complete"):
            return "done"
        if r.get("failed"):
            return "failed"
    return "partial" if (out / "checkpoint.pt").exists() else "todo"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimipt.course.experiments", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(GRIDS))
    ap.add_argument("--results", default=None, help="folder for run folders (default: results/)")
    ap.add_argument("--parallel", type=int, default=4, help="runs at once (they share the device)")
    ap.add_argument("--gpus", default=None,
                    help="comma-separated CUDA device indices (e.g. 0,1): each run is pinned to the least "
                         "busy one through CUDA_VISIBLE_DEVICES; default: leave the environment as it is")
    ap.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget of this call")
    ap.add_argument("--only", default=None, help="run only runs whose name contains this text")
    ap.add_argument("--set", action="append", default=[], help="extra config override for every run")
    ap.add_argument("--list", action="store_true", help="list the runs and their status, run nothing")
    args = ap.parse_args(argv)

    root = Path(args.results) if args.results else repo_root() / "results"
    folder = root / args.name
    grid = expand(args.name)

    def current() -> list[dict]:
        return [r for r in _resolve_finals(grid, folder) if not args.only or args.only in r["name"]]

    gpus = _parse_gpus(args.gpus)
    runs = current()
    if args.list:
        for r in runs:
            print(f"{_status(folder / r['name']):8s} {r['name']}")
        waiting = sum(1 for r in grid if r["stage"] == "final") - sum(1 for r in runs if r["stage"] == "final")
        if waiting:
            print(f"{waiting} more runs wait for their variant's learning-rate sweep")
        return 0
    todo = [r for r in runs if _status(folder / r["name"]) not in ("done", "failed")]
    print(f"{args.name}: {len(runs)} runs, {len(todo)} to do, {args.parallel} at a time")
    start = time.time()
    pending, active, failed = list(todo), [], []
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    while pending or active:
        left = None if args.max_minutes is None else args.max_minutes - (time.time() - start) / 60
        while pending and len(active) < args.parallel and (left is None or left > 0.5):
            run = pending.pop(0)
            out = folder / run["name"]
            log = open(logs / f"{run['name']}.log", "a")
            cmd = _command(run, out, None if left is None else max(0.2, left - 0.3), args.set)
            env = os.environ.copy()
            # every process would otherwise start one CPU thread per core: dozens of runs then thrash
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.parallel)))
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = _least_busy(gpus, [e for _, _, _, e in active])
            active.append((run, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log,
                           env.get("CUDA_VISIBLE_DEVICES")))
        if left is not None and left <= 0.5 and not active:
            break
        time.sleep(0.5)
        for item in list(active):
            run, proc, log, _ = item
            if proc.poll() is not None:
                active.remove(item)
                log.close()
                state = _status(folder / run["name"])
                if proc.returncode != 0:
                    failed.append(run["name"])
                print(f"[{time.time() - start:6.0f}s] {run['name']}: exit {proc.returncode}, {state}", flush=True)
                if run["stage"] == "sweep":  # a finished sweep may release final-stage runs
                    known = {r["name"] for r in runs}
                    for new in current():
                        if new["name"] not in known and _status(folder / new["name"]) not in ("done", "failed"):
                            runs.append(new)
                            pending.append(new)
    runs = current()
    done = sum(_status(folder / r["name"]) == "done" for r in runs)
    print(f"{args.name}: {done}/{len(grid)} runs complete after {time.time() - start:.0f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
