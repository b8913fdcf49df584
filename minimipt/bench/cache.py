"""The cache's pieces, per layer: eviction times, held sets and attention, PyTorch forms vs the fused kernels.

``python -m minimipt.bench cache [--shape 8x8192x4x32x64] [--sweep] [--out results/bench/cache_<hw>.json]``

At one shape ``B×L×H×d_h×K`` (default the language model's: 8 × 8,192, 4 heads of 32, K = 64, bf16
q, k, v as under autocast) it times (median of ``triton.testing.do_bench`` on CUDA):

  eviction_times        the PyTorch eviction times (blocked prefix top-K + searchsorted)
  slot_table            the streaming slots of every position (what "blocked" gathers from)
  blocked               eviction_times + the blocked attention, forward / forward+backward
  evict_kernel          the fused path's eviction kernel (times and held sets)
  fused                 the fused path (eviction kernel + attention kernels), forward / forward+backward

and the peak memory of one forward+backward of "blocked" and "fused" above what the inputs hold.
``--sweep`` also times the fused path's launch configurations (block C and the warps of the
eviction kernel alone; block C and the forward's and backward's warps for the whole path) and
records the fastest of each (10 configurations, each a compilation); the defaults live in
:mod:`minimipt.ops.triton.cache_attention`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from ..env import get_device, smoke_mode
from ..ops.cache_attention import cache_attention_blocked, evict_and_attend
from ..ops.eviction import eviction_times, slot_table
from .common import results_path, timer

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default=None, help="BxLxHxDHxK (default 8x8192x4x32x64 on CUDA)")
    parser.add_argument("--sweep", action="store_true", help="also time the fused path's launch configurations")
    parser.add_argument("--out", default=None, help="results JSON (default: results/bench/cache_<hw>.json)")


def _problem(B, L, H, dh, device, dtype):
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, L, 3 * H * dh, generator=g).to(device, dtype)
    q, k, v = (x.reshape(B, L, H, dh).detach().requires_grad_() for x in qkv.chunk(3, dim=-1))
    log_w = (torch.randn(B, L, generator=g) - 2).to(device).requires_grad_()  # write scores (log of a mean rate)
    eligible = torch.ones(B, L, dtype=torch.bool, device=device)
    gout = torch.randn(B, L, H, dh, generator=g).to(device, dtype)
    return q, k, v, log_w, eligible, gout


def _peak_mb(fn, device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)


def _path(method, q, k, v, log_w, eligible, K, gout):
    leaves = (q, k, v, log_w)

    def fwd():
        with torch.no_grad():
            return evict_and_attend(q, k, v, log_w, eligible, K, method)[1]

    def fwd_bwd():
        return torch.autograd.grad(evict_and_attend(q, k, v, log_w, eligible, K, method)[1], leaves, gout)

    return fwd, fwd_bwd


def _sweep(prob, K, gout, bench) -> list[dict]:
    """Launch configurations of the fused path: the eviction kernel alone over (C, its warps), and
    the attention forward+backward (eviction included) over (C, forward warps, backward warps)."""
    from ..ops.triton import cache_attention as tca

    saved = (tca.BLOCK_MAX, tca.EVICT_WARPS, tca.FWD_WARPS, tca.BWD_WARPS)
    q, k, v, log_w, eligible = prob
    rows = []

    def timed(row, fn):
        try:
            row["ms"] = round(bench(fn), 4)
        except Exception as err:  # noqa: BLE001 - a configuration that does not compile is recorded
            row["error"] = f"{type(err).__name__}: {err}"[:200]
        rows.append(row)
        print(f"  sweep {row}", flush=True)

    try:
        for C, ew in itertools.product((32, 64), (8, 16)):
            tca.BLOCK_MAX, tca.EVICT_WARPS = C, ew
            timed({"part": "evict", "C": C, "evict_warps": ew},
                  lambda: tca.evict_blocks_triton(log_w.detach(), eligible, K))
        tca.EVICT_WARPS = saved[1]
        for C, (fw, bw) in itertools.product((32, 64), ((4, 8), (8, 8), (4, 4))):
            tca.BLOCK_MAX, tca.FWD_WARPS, tca.BWD_WARPS = C, fw, bw
            timed({"part": "fused_fwd_bwd", "C": C, "fwd_warps": fw, "bwd_warps": bw},
                  _path("fused", *prob, K, gout)[1])
    finally:
        tca.BLOCK_MAX, tca.EVICT_WARPS, tca.FWD_WARPS, tca.BWD_WARPS = saved
    return rows


def run(args: argparse.Namespace) -> int:
    from ..ops.cache_attention import fused_usable
    from ..train.provenance import provenance

    device = get_device()
    small = smoke_mode() or device.type != "cuda"
    B, L, H, dh, K = (int(x) for x in (args.shape or ("2x256x2x16x8" if small else "8x8192x4x32x64")).split("x"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v, log_w, eligible, gout = prob = _problem(B, L, H, dh, device, dtype)
    bench = timer(device)
    t0 = time.time()
    lw = log_w.detach()
    rows = {"eviction_times": bench(lambda: eviction_times(lw, eligible, K))}
    e = eviction_times(lw, eligible, K)
    rows["slot_table"] = bench(lambda: slot_table(e, K))
    fwd, fwd_bwd = _path("blocked", *prob[:5], K, gout)
    rows["blocked_fwd"], rows["blocked_fwd_bwd"] = bench(fwd), bench(fwd_bwd)
    rows["blocked_attention_only_fwd_bwd"] = bench(
        lambda: torch.autograd.grad(cache_attention_blocked(q, k, v, log_w, e, K), (q, k, v, log_w), gout))
    peak = {"blocked": _peak_mb(fwd_bwd, device)}
    fused = fused_usable(device, dtype, L, K)
    sweep = []
    if fused:
        from ..ops.triton.cache_attention import evict_blocks_triton

        rows["evict_kernel"] = bench(lambda: evict_blocks_triton(lw, eligible, K))
        fwd, fwd_bwd = _path("fused", *prob[:5], K, gout)
        rows["fused_fwd"], rows["fused_fwd_bwd"] = bench(fwd), bench(fwd_bwd)
        peak["fused"] = _peak_mb(fwd_bwd, device)
        if args.sweep:
            sweep = _sweep(prob[:5], K, gout, bench)
    else:
        print(f"the fused path does not run on {device}: its rows are skipped")
    rows = {name: round(ms, 4) for name, ms in rows.items()}
    print(f"cache per layer, B {B}, L {L}, H {H}, d_h {dh}, K {K}, {dtype}, {device} (ms)")
    for name, ms in rows.items():
        print(f"  {name:32s} {ms:9.3f}")
    print(f"  peak MB above the inputs (forward+backward): {peak}")
    out = results_path(args.out, "cache", device)
    best = {part: min((r for r in sweep if r["part"] == part and "ms" in r), key=lambda r: r["ms"], default=None)
            for part in ("evict", "fused_fwd_bwd")}
    out.write_text(json.dumps({"benchmark": "cache", "config": {"B": B, "L": L, "H": H, "d_h": dh, "K": K,
                                                                "dtype": str(dtype), "eligible": "all"},
                               "ms": rows, "peak_mb": peak, "sweep": sweep, "sweep_best": best,
                               "wall_time_s": round(time.time() - t0, 1), **provenance(device)}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0

