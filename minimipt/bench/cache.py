"""The cache's pieces, per layer: eviction times, held sets and attention, PyTorch forms vs the fused kernels.

``python -m minimipt.bench.cache [--shape 8x8192x4x32x64] [--sweep] [--out results/bench/cache_<hw>.json]``

At one shape ``B×L×H×d_h×K`` (default the language model's: 8 × 8,192, 4 heads of 32, K = 64, bf16
q, k, v as under autocast) it times (median of ``triton.testing.do_bench`` on CUDA):

  eviction_times        the PyTorch eviction times (blocked prefix top-K + searchsorted)
  slot_table            the streaming slots of every position (what "blocked" gathers from)
  blocked               eviction_times + the blocked attention, forward / forward+backward
  evict_kernel          the fused path's eviction kernel (times and held sets)
  fused                 the fused path (eviction kernel + attention kernels), forward / forward+backward

and the peak memory of one forward+backward of "blocked" and "fused" above what the inputs hold.
``--sweep`` also times the fused path's launch configurations (block C, warps of the three kernels)
and records the fastest; the defaults live in :mod:`minimipt.ops.triton.cache_attention`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from ..env import get_device, smoke_mode
from ..ops.cache_attention import cache_attention_blocked, evict_and_attend
from ..ops.eviction import eviction_times, slot_table
from .scan import _timer

__all__ = ["add_arguments", "run", "main"]


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


def _sweep(args, bench) -> list[dict]:
    from ..ops.triton import cache_attention as tca

    saved = (tca.BLOCK_MAX, tca.EVICT_WARPS, tca.FWD_WARPS, tca.BWD_WARPS)
    rows = []
    try:
        for C, ew, fw, bw in itertools.product((32, 64), (4, 8), (4, 8), (4, 8)):
            tca.BLOCK_MAX, tca.EVICT_WARPS, tca.FWD_WARPS, tca.BWD_WARPS = C, ew, fw, bw
            _, fwd_bwd = _path("fused", *args)
            try:
                ms = bench(fwd_bwd)
            except Exception as err:  # noqa: BLE001 - a configuration that does not compile is recorded
                rows.append({"C": C, "evict_warps": ew, "fwd_warps": fw, "bwd_warps": bw, "error": str(err)[:200]})
                continue
            rows.append({"C": C, "evict_warps": ew, "fwd_warps": fw, "bwd_warps": bw, "fwd_bwd_ms": round(ms, 4)})
            print(f"  sweep C={C} warps evict {ew} fwd {fw} bwd {bw}: {ms:.3f} ms", flush=True)
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
    bench = _timer(device)
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
            sweep = _sweep((*prob[:5], K, gout), bench)
    else:
        print(f"the fused path does not run on {device}: its rows are skipped")
    rows = {name: round(ms, 4) for name, ms in rows.items()}
    print(f"cache per layer, B {B}, L {L}, H {H}, d_h {dh}, K {K}, {dtype}, {device} (ms)")
    for name, ms in rows.items():
        print(f"  {name:32s} {ms:9.3f}")
    print(f"  peak MB above the inputs (forward+backward): {peak}")
    hw = torch.cuda.get_device_name(device).replace(" ", "_") if device.type == "cuda" else "cpu"
    out = Path(args.out or f"results/bench/cache_{hw}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    best = min((r for r in sweep if "fwd_bwd_ms" in r), key=lambda r: r["fwd_bwd_ms"], default=None)
    out.write_text(json.dumps({"benchmark": "cache", "config": {"B": B, "L": L, "H": H, "d_h": dh, "K": K,
                                                                "dtype": str(dtype), "eligible": "all"},
                               "ms": rows, "peak_mb": peak, "sweep": sweep, "sweep_best": best,
                               "wall_time_s": round(time.time() - t0, 1), **provenance(device)}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimipt.bench.cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
