"""What the public entry point costs: ``mipt_scan`` with its default value check against the kernel.

``python -m minimipt.bench entry [--shapes 32x512x8192] [--out results/bench/entry_<hw>.json]``

Rows, each timed forward and forward+backward (median of ``triton.testing.do_bench`` on CUDA, of
``perf_counter`` repeats on the CPU), float32 inputs in our layout ``(B, L, D)``:

  kernel     the method "auto" resolves to, called directly (on CUDA the Triton kernel)
  no_check   ``mipt_scan(..., check_values=False)``: structure checks and dispatch only
  default    ``mipt_scan(...)``: plus the value check — a separate pass over the inputs with one
             wait for the device, or (for a method registered with ``checks_values=True``) the
             flag its kernel raises, read back as 4 bytes
  check      ``check_scan_values`` alone (one pass per input, one host synchronisation)
  flag       ``flag_invalid_values`` alone (the same verdict on the device, no synchronisation)

``default / kernel`` is the figure of merit (goal: at most 1.15). Bytes: the check reads p, θ
(4 B each) and u (8 B) per element, the forward reads them and writes h (8 B): a separate check
alone is 16/24 of the forward's traffic.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..env import get_device, smoke_mode
from ..ops import mipt_scan
from ..ops.checks import check_scan_values, flag_invalid_values
from ..ops.scan import _REGISTRY, resolve_method
from .common import parse_shapes, results_path, scan_inputs, timer

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", default=None, help="comma-separated BxDxL (default 32x512x8192 on CUDA, "
                                                       "tiny in smoke mode or on the CPU)")
    parser.add_argument("--out", default=None, help="results JSON (default: results/bench/entry_<hw>.json)")


def _rows(B: int, D: int, L: int, device: torch.device, bench) -> list[dict]:
    x = scan_inputs(B, D, L, "float32", device, seed=0)
    p, theta, u = x["p"], x["theta"], torch.view_as_complex(x["u"])
    gh = torch.view_as_complex(x["gh"])
    method = resolve_method("auto", device)
    kernel = _REGISTRY[method].fn
    bad = torch.zeros(1, dtype=torch.int32, device=device)
    calls = {"kernel": lambda *a: kernel(*a, None),
             "no_check": lambda *a: mipt_scan(*a, check_values=False),
             "default": lambda *a: mipt_scan(*a)}
    out = []
    for name, fn in calls.items():
        leaves = [t.detach().clone().requires_grad_() for t in (p, theta, u)]

        def fwd(fn=fn):
            with torch.no_grad():
                return fn(p, theta, u)

        def fwd_bwd(fn=fn, leaves=leaves):
            return torch.autograd.grad(fn(*leaves), leaves, gh)

        out.append({"row": name, "method": method, "fwd_ms": round(bench(fwd), 4),
                    "fwd_bwd_ms": round(bench(fwd_bwd), 4)})
    out.append({"row": "check", "fwd_ms": round(bench(lambda: check_scan_values(p, theta, u)), 4)})
    out.append({"row": "flag", "fwd_ms": round(bench(lambda: flag_invalid_values(p, theta, u, None, bad)), 4)})
    k = out[0]
    for r in out[1:3]:
        r["fwd_ratio"] = round(r["fwd_ms"] / k["fwd_ms"], 3)
        r["fwd_bwd_ratio"] = round(r["fwd_bwd_ms"] / k["fwd_bwd_ms"], 3)
    return out


def run(args: argparse.Namespace) -> int:
    from ..train.provenance import provenance

    device = get_device()
    small = smoke_mode() or device.type != "cuda"
    shapes = parse_shapes(args.shapes or ("2x16x256" if small else "32x512x8192"))
    bench = timer(device)
    t0 = time.time()
    results = []
    print(f"mipt_scan entry cost on {device} (float32; ms; ratio to the kernel)")
    for B, D, L in shapes:
        rows = _rows(B, D, L, device, bench)
        for r in rows:
            ratio = f"  {r['fwd_ratio']:.3f}x / {r['fwd_bwd_ratio']:.3f}x" if "fwd_ratio" in r else ""
            fb = f"{r['fwd_bwd_ms']:9.3f}" if "fwd_bwd_ms" in r else " " * 9
            print(f"B={B} D={D} L={L}  {r['row']:9s} fwd {r['fwd_ms']:9.3f}  fwd+bwd {fb}{ratio}", flush=True)
        results.append({"B": B, "D": D, "L": L, "rows": rows})
    out = results_path(args.out, "entry", device)
    out.write_text(json.dumps({"benchmark": "entry", "config": {"dtype": "float32", "shapes": shapes},
                               "results": results, "wall_time_s": round(time.time() - t0, 1),
                               **provenance(device)}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0

