"""Scan benchmark: time every mipt_scan method and the peer accelerated-scan in one run.

For each shape (B, D, L), input dtype and method it measures the forward and the forward+backward
time (median of triton.testing.do_bench on CUDA; of perf_counter repeats on the CPU), the achieved
bandwidth against the memory floor, and the relative error of h against a float64 sequential
reference on a slice (batch row 0, the first 64 channels, the whole length).

Methods:
  sequential   the reference loop (only where L <= 2048: it is one step per token)
  chunked      pure PyTorch, Horner steps inside chunks + recursive carry (two passes)
  closed_form  pure PyTorch, a C×C closed-form matrix per chunk + recursive carry (the teaching form)
  mipt_scan    the public entry point minimipt.mipt_scan (method "auto"), i.e. the fastest method
               plus its input checks (finite values, p in [0, 1]: extra passes over the inputs);
               the rows above call the registered methods directly, as the peer is called
  triton       the fused Triton kernel (minimipt.ops.triton.scan); bf16 inputs are given as
               bf16 p, theta and bf16 (re, im) pairs of u
  peer         accelerated_scan.complex.scan(forget, inputs) 0.3.1 on precomputed
               forget = (1-p)e^{i theta}, inputs = p*u in its (B, C, T) complex64 layout
  peer+gate    the same, with forget and inputs formed in PyTorch inside the timed region
               (still in its own (B, C, T) layout: no transposes are charged)

Bytes (the least each form must move, per complex element): ours read p, theta (4 or 2 B each) and
u (8 B, or 4 as bf16 pairs) and write h (8 B); the backward reads dL/dh, p, theta, u, h and writes
dp, dtheta, du. The peer's forward reads a and b and writes h (24 B); its backward reads a, h,
dL/dh and writes da, db (40 B). The floor is those bytes over the device-to-device copy bandwidth
measured in the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from ..env import get_device, repo_root, smoke_mode
from ..ops import CHUNK, mipt_scan, scan_chunked, scan_methods, scan_sequential
from ..ops.scan import _REGISTRY
from ..train.provenance import git_commit

__all__ = ["add_arguments", "run", "DEFAULT_SHAPES", "SMOKE_SHAPES"]

DEFAULT_SHAPES = [(32, 512, 8192), (8, 1536, 4096), (16, 256, 2048)]  # (B, D, L)
SMOKE_SHAPES = [(2, 16, 64), (1, 8, 100)]
SEQUENTIAL_MAX_L = 2048
ERR_CHANNELS = 64


def scan_row_label(row: dict) -> str:
    """A scan benchmark row's method name, with its chunk length when it has one: ``chunked (C=32)``."""
    return row["method"] + (f" (C={row['chunk']})" if row.get("chunk") is not None else "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", default=None,
                        help="comma-separated BxDxL, e.g. 32x512x8192,8x1536x4096 (default: the three "
                             "issue shapes on CUDA, tiny ones on the CPU or in smoke mode)")
    parser.add_argument("--dtypes", default="float32,bf16", help="input dtypes: float32, bf16")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of sequential,chunked,closed_form,triton,peer,peer+gate,mipt_scan "
                             "(default: all that are available)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: MINIMIPT_DEVICE, else CUDA if present)")
    parser.add_argument("--out", default=None, help="results JSON (default: results/bench/scan_<hw>.json)")
    parser.add_argument("--sweep", action="store_true",
                        help="also time the Triton kernel's block configurations at the first shape")
    parser.add_argument("--sweep-only", action="store_true",
                        help="only the sweep (writes the JSON with best_fwd / best_bwd configurations)")
    parser.add_argument("--adopt-sweep", action="store_true",
                        help="with --sweep: time the rows with the sweep's best recompute-backward configuration "
                             "(if it beats the default end to end); the results file records the one used")
    parser.add_argument("--chunks", default="",
                        help="extra chunk lengths C to time \"chunked\" with, e.g. 32,64 (the default C always runs)")
    parser.add_argument("--commit", default=None, help="git commit to record (default: read with git)")


def _parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--shapes: {item!r} is not BxDxL with positive integers (e.g. 32x512x8192)")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------

def _timer(device: torch.device):
    if device.type == "cuda":
        import triton.testing

        def bench(fn) -> float:
            fn()  # compile / warm up outside the timed region
            torch.cuda.synchronize()
            return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
        return bench

    def bench_cpu(fn) -> float:
        fn()
        times = []
        t_end = time.perf_counter() + 0.5
        while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 50):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    return bench_cpu


def _copy_bandwidth(device: torch.device, bench) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + written)."""
    n = (1 << 28) if device.type == "cuda" else (1 << 22)  # 1 GiB of float32 on the GPU
    x = torch.randn(n, device=device)
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * x.numel() * x.element_size() / (ms * 1e-3)


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------

def _inputs(B: int, D: int, L: int, dtype: str, device: torch.device, seed: int):
    """Fresh random inputs in our layout (B, L, D): float32 masters and the dtype's copies."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # mostly small rates (long memory, the hard case for accuracy), never exactly 0
    p = torch.sigmoid(2 * torch.randn(B, L, D, generator=gen) - 3)
    theta = torch.randn(B, L, D, generator=gen)
    u = torch.randn(B, L, D, 2, generator=gen)
    gh = torch.randn(B, L, D, 2, generator=gen)
    if dtype == "bf16":  # the reference sees the rounded values
        p, theta, u = p.bfloat16().float(), theta.bfloat16().float(), u.bfloat16().float()
    return {k: v.to(device) for k, v in dict(p=p, theta=theta, u=u, gh=gh).items()}


def _reference(x: dict) -> torch.Tensor:
    """float64 sequential h on the slice (row 0, first channels, all L), on the CPU: (L, Dc)."""
    Dc = min(ERR_CHANNELS, x["p"].shape[2])
    sl = (slice(0, 1), slice(None), slice(0, Dc))
    p = x["p"][sl].double().cpu()
    theta = x["theta"][sl].double().cpu()
    u = torch.view_as_complex(x["u"][sl].double().cpu().contiguous())
    return scan_sequential(p, theta, u)[0]


def _rel(h: torch.Tensor, ref: torch.Tensor) -> float:
    h = h.detach().to(torch.complex128).cpu()
    return float((h - ref).abs().norm() / ref.abs().norm())


def _bytes_ours(x: dict, p_dt: torch.dtype, u_bytes: int) -> tuple[int, int]:
    sp = torch.finfo(p_dt).bits // 8
    fwd = 2 * sp + u_bytes + 8
    bwd = (8 + 2 * sp + u_bytes + 8) + (2 * sp + u_bytes)
    return fwd, fwd + bwd


def _case_ours(method: str, x: dict, dtype: str, chunk: int | None = None):
    """(forward fn, forward+backward fn, output h, bytes fwd, bytes fwd+bwd) for our methods;
    ``chunk``: the chunk length of "chunked" (None: its default)."""
    lowp = dtype == "bf16"
    pdt = torch.bfloat16 if lowp else torch.float32
    p = x["p"].to(pdt)
    theta = x["theta"].to(pdt)
    gh = torch.view_as_complex(x["gh"])
    if method == "triton" and lowp:
        from ..ops.triton.scan import scan_triton

        u = x["u"].to(torch.bfloat16).contiguous()  # (B, L, D, 2) narrow pairs
        fn = scan_triton
        u_bytes = 4
    elif method == "mipt_scan":  # the public entry point: input checks + method "auto"
        u = torch.view_as_complex(x["u"].contiguous())
        fn = mipt_scan
        u_bytes = 8
    else:  # the registered method itself, without mipt_scan's input value checks (as the peer)
        u = torch.view_as_complex(x["u"].contiguous())
        fn = _REGISTRY[method].fn if chunk is None else functools.partial(scan_chunked, chunk=chunk)
        u_bytes = 8
    leaves = [t.detach().clone().requires_grad_() for t in (p, theta, u)]

    def fwd():
        with torch.no_grad():
            return fn(p, theta, u)

    def fwd_bwd():
        h = fn(*leaves)
        return torch.autograd.grad(h, leaves, gh)

    b_f, b_fb = _bytes_ours(x, pdt, u_bytes)
    return fwd, fwd_bwd, b_f, b_fb


def _case_peer(x: dict, with_gate: bool):
    from accelerated_scan.complex import scan as peer_scan

    # the peer's layout: (B, C, T) complex64, contiguous
    p = x["p"].transpose(1, 2).contiguous()
    theta = x["theta"].transpose(1, 2).contiguous()
    u = torch.view_as_complex(x["u"].transpose(1, 2).contiguous())
    gh = torch.view_as_complex(x["gh"].transpose(1, 2).contiguous())

    def gate(p, theta, u):
        return torch.polar(1 - p, theta), p * u

    if with_gate:
        leaves = [t.detach().clone().requires_grad_() for t in (p, theta, u)]

        def fwd():
            with torch.no_grad():
                return peer_scan(*gate(p, theta, u))

        def fwd_bwd():
            return torch.autograd.grad(peer_scan(*gate(*leaves)), leaves, gh)
        b_f, b_fb = _bytes_ours(x, torch.float32, 8)
    else:
        a, b = gate(p, theta, u)
        leaves = [a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()]

        def fwd():
            with torch.no_grad():
                return peer_scan(a, b)

        def fwd_bwd():
            return torch.autograd.grad(peer_scan(*leaves), leaves, gh)
        b_f, b_fb = 24, 24 + 40
    return fwd, fwd_bwd, b_f, b_fb


def _peer_version() -> str | None:
    try:
        from importlib.metadata import version

        import accelerated_scan.complex  # noqa: F401

        return version("accelerated-scan")
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------
# the sweep of the kernel's block configurations
# ---------------------------------------------------------------------------------------------

# (BLOCK_L, BLOCK_D, num_warps, fast_trig, strided, prefetch[, num_stages[, rows]])
SWEEP_CONFIGS = [
    (16, 32, 4, False, False, False), (16, 32, 2, False, False, False), (32, 32, 4, False, False, False),
    (16, 64, 4, False, False, False), (16, 16, 1, False, False, False), (8, 32, 1, False, False, False),
    (16, 8, 1, False, False, False), (32, 16, 2, False, False, False), (16, 16, 2, False, False, False),
    (32, 8, 1, False, False, False), (64, 16, 4, False, False, False), (32, 32, 8, False, False, False),
    (16, 32, 4, False, False, True), (16, 32, 2, False, False, True), (16, 16, 1, False, False, True),
    (8, 32, 1, False, False, True), (16, 8, 1, False, False, True), (32, 16, 2, False, False, True),
    (16, 32, 4, True, False, False), (16, 16, 1, True, False, True),
    (16, 32, 4, False, True, False), (16, 32, 4, False, False, False, 1),
    # the rows-per-thread forward (v5, 8th field rows=True; num_stages None = Triton's default):
    # lanes x rows per thread 2x8, 2x8, 2x16, 2x16, 2x4, 4x4, 1x8, 1x16, 2x16 (2 warps); all compile for
    # sm_90 with Triton 3.6 without spills (registers, instructions in notes/kernel.md, v5)
    (16, 16, 1, False, False, True, None, True), (16, 16, 1, False, False, False, None, True),
    (32, 16, 1, False, False, True, None, True), (32, 16, 1, False, False, False, None, True),
    (8, 16, 1, False, False, True, None, True), (16, 8, 1, False, False, True, None, True),
    (8, 32, 1, False, False, True, None, True), (16, 32, 1, False, False, True, None, True),
    (32, 32, 2, False, False, True, None, True),
]
# the recomputing backward (v3, backward="recompute"): (BLOCK_L, BLOCK_D, num_warps, shift, prefetch);
# shift 0: the shifted states by an exclusive scan, 2: each thread owns R = BLOCK_L/LANES consecutive
# rows, LANES = 32·num_warps/BLOCK_D (v4). Session 3's measured leaders plus the neighbours of its
# winner (16, 16, 2, 2); the gather shift (1) and the slower shift-0 / BLOCK_D = 8 one-warp entries
# were dropped after that run (all >= 3.0 ms). All compile for sm_90 without register spills
# (ptxas -v; registers in notes/kernel.md); the forward then checkpoints every BLOCK_L rows
RECOMPUTE_SWEEP = [
    # anchors, measured in session 3: the v3 default, the fast shift-0 ones, the shift-2 leaders
    (16, 8, 1, 0, False), (8, 16, 1, 0, False), (8, 16, 1, 0, True),
    (16, 16, 2, 2, False), (16, 16, 1, 2, False), (8, 8, 1, 2, False), (32, 16, 2, 2, False),
    # neighbours of (16, 16, 2, 2): prefetch, more warps, wider BLOCK_D, shorter tiles
    (16, 16, 2, 2, True), (16, 16, 1, 2, True), (32, 16, 2, 2, True),
    (16, 16, 4, 2, False), (32, 16, 4, 2, False), (32, 32, 4, 2, False),
    (16, 32, 4, 2, False), (16, 32, 4, 2, True), (16, 32, 2, 2, False),
    (8, 16, 1, 2, False), (8, 16, 1, 2, True), (8, 16, 2, 2, False), (8, 16, 2, 2, True),
    # neighbours of (8, 8, 1, 2) (4 lanes x 2 rows, 2.13 ms): the same split at BLOCK_D 16 / 32
    (8, 8, 1, 2, True), (8, 32, 4, 2, False), (8, 32, 2, 2, False),
]


def _rel_diff(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref.float()).norm() / ref.float().norm())


def _sweep(shape, device, bench) -> dict:
    """Time each kernel configuration (forward and backward kernels alone, float32) and check
    that its outputs equal those of the default configuration; both backwards ("saved_h" rows
    first, then "recompute" rows, whose forward also writes the checkpoints), and each backward's
    best configuration end to end through autograd."""
    from ..ops.triton import scan as ts

    B, D, L = shape
    x = _inputs(B, D, L, "float32", device, seed=123)
    p, theta, u2, g2 = x["p"], x["theta"], x["u"], x["gh"]
    h_ref = ts._launch_fwd(p, theta, u2, None, ts.DEFAULT_CONFIG)[0]
    d_ref = ts._launch_bwd(p, theta, u2, None, h_ref, g2, ts.BWD_CONFIG)[:3]
    # saved_h: forward 24 B/element, backward 48 (it reads h)
    rows = _sweep_rows("saved_h", SWEEP_CONFIGS, lambda cfg: (ts._launch_fwd(p, theta, u2, None, cfg)[0], h_ref),
                       lambda cfg, h: ts._launch_bwd(p, theta, u2, None, h, g2, cfg), 24, 48, h_ref, d_ref, bench)
    # recompute: the forward (default configuration) also checkpoints every BLOCK_L rows,
    # 24 + 8/BLOCK_L B/element; the backward reads dL/dh, p, θ, u and the checkpoints, 40 + 8/BLOCK_L
    rc_rows = _sweep_rows("recompute", RECOMPUTE_SWEEP,
                          lambda cfg: ts._launch_fwd(p, theta, u2, None, ts.DEFAULT_CONFIG, cfg[0]),
                          lambda cfg, ck: ts._launch_bwd_recompute(p, theta, u2, None, ck, g2, cfg),
                          lambda cfg: 24 + 8 / cfg[0], lambda cfg: 40 + 8 / cfg[0], h_ref, d_ref, bench)
    out = {"shape_BDL": list(shape), "rows": rows + rc_rows, "best_fwd": _pick(rows, "fwd"),
           "best_bwd": _pick(rows, "bwd"), "best_recompute": _pick(rc_rows, "bwd")}
    out["end_to_end"] = _sweep_end_to_end(ts, x, out, bench)
    return out


def _print_sweep_row(row: dict) -> None:
    tag = "" if row["backward"] == "saved_h" else " recompute"
    print(f"  sweep{tag} {tuple(row['config'])}: " + (
        f"fwd {row['fwd_ms']:.3f} ms ({row['fwd_TBps']:.2f} TB/s, diff {row['fwd_diff']:.0e}), "
        f"bwd {row['bwd_ms']:.3f} ms ({row['bwd_TBps']:.2f} TB/s, diff {row['bwd_diff']:.0e})"
        if "error" not in row else row["error"]), flush=True)


def _sweep_rows(backward, configs, fwd, bwd, fwd_bytes, bwd_bytes, h_ref, d_ref, bench) -> list[dict]:
    """Time each configuration's forward and backward kernels alone and check their outputs against
    the default configuration's. ``fwd(cfg) -> (h, saved)``, ``bwd(cfg, saved) -> (dp, dθ, du, ...)``;
    ``*_bytes``: bytes moved per element, a number or a function of ``cfg``."""
    n = d_ref[0].numel()  # B·L·D (dp is real (B, L, D))
    per = lambda b, cfg: b(cfg) if callable(b) else b  # noqa: E731
    rows = []
    for cfg in configs:
        row = {"backward": backward, "config": list(cfg)}
        try:
            hv, saved = fwd(cfg)
            row["fwd_diff"] = _rel_diff(hv, h_ref)
            dv = bwd(cfg, saved)[:3]
            row["bwd_diff"] = max(_rel_diff(a, b) for a, b in zip(dv, d_ref))
            del hv, dv
            row["fwd_ms"] = bench(lambda: fwd(cfg))
            row["bwd_ms"] = bench(lambda: bwd(cfg, saved))
            row["fwd_TBps"] = per(fwd_bytes, cfg) * n / (row["fwd_ms"] * 1e-3) / 1e12
            row["bwd_TBps"] = per(bwd_bytes, cfg) * n / (row["bwd_ms"] * 1e-3) / 1e12
        except Exception as err:  # a config that does not compile (e.g. too many registers)
            row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
        rows.append(row)
        _print_sweep_row(row)
    return rows


def _sweep_end_to_end(ts, x: dict, sweep: dict, bench) -> list[dict]:
    """Forward+backward through autograd (``scan_triton``, complex64 u, no h0) with each
    backward: the committed defaults, each backward's best swept configuration, and the recompute
    backward's best with the sweep's best forward (when that is not the default forward)."""
    p, theta = x["p"], x["theta"]
    u = torch.view_as_complex(x["u"].contiguous())
    gh = torch.view_as_complex(x["gh"])
    leaves = [t.detach().clone().requires_grad_() for t in (p, theta, u)]
    fwd0 = tuple(ts.DEFAULT_CONFIG)
    cases = [("saved_h", fwd0, ts.BWD_CONFIG, "default"), ("recompute", fwd0, ts.RECOMPUTE_CONFIG, "default")]
    if sweep["best_bwd"]:
        cases.append(("saved_h", fwd0, tuple(sweep["best_bwd"]), "best"))
    if sweep["best_recompute"]:
        cases.append(("recompute", fwd0, tuple(sweep["best_recompute"]), "best"))
        if sweep["best_fwd"] and tuple(sweep["best_fwd"]) != fwd0:
            cases.append(("recompute", tuple(sweep["best_fwd"]), tuple(sweep["best_recompute"]), "best_fwd+best"))
    out = []
    for backward, fwd_cfg, cfg, which in cases:
        row = {"backward": backward, "config": list(cfg), "fwd_config": list(fwd_cfg), "which": which}
        try:
            row["fwd_bwd_ms"] = bench(lambda: torch.autograd.grad(
                ts.scan_triton(*leaves, fwd_config=fwd_cfg, bwd_config=cfg, backward=backward), leaves, gh))
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
        out.append(row)
        print(f"  end to end {backward} {which} fwd {fwd_cfg} bwd {tuple(cfg)}: " +
              (f"f+b {row['fwd_bwd_ms']:.3f} ms" if "error" not in row else row["error"]), flush=True)
    return out


def _pick(rows: list[dict], kind: str) -> list | None:
    """Fastest configuration whose outputs match the default's to 1e-5; the approximate
    trigonometry only when it is at least 5% faster than the best accurate one."""
    ok = [r for r in rows if "error" not in r and r[f"{kind}_diff"] <= 1e-5]
    if not ok:
        return None
    best = min(ok, key=lambda r: r[f"{kind}_ms"])
    if best.get("backward") == "recompute":  # these configurations have no trigonometry option
        return best["config"]
    accurate = [r for r in ok if not r["config"][3]]
    if best["config"][3] and accurate:
        best_acc = min(accurate, key=lambda r: r[f"{kind}_ms"])
        if best["{}_ms".format(kind)] > 0.95 * best_acc[f"{kind}_ms"]:
            best = best_acc
    return best["config"]


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    t_start = time.time()
    device = get_device(args.device)
    small = smoke_mode() or device.type != "cuda"
    shapes = _parse_shapes(args.shapes) if args.shapes else (SMOKE_SHAPES if small else DEFAULT_SHAPES)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in ("float32", "bf16"):
            raise ValueError(f"--dtypes: {d!r} is not one of float32, bf16")
    chunks = [CHUNK] + _parse_chunks(args.chunks)
    if args.adopt_sweep and not (args.sweep and not args.sweep_only):
        raise ValueError("--adopt-sweep needs --sweep (and not --sweep-only): it times the rows with the sweep's winner")
    peer_version = _peer_version() if device.type == "cuda" else None
    from ..ops.triton import triton_available

    available = ["sequential", "chunked", "closed_form"]
    if "triton" in scan_methods() and triton_available(device):
        available.append("triton")
    if peer_version:
        available += ["peer", "peer+gate"]
    available.append("mipt_scan")
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        known = {"sequential", "chunked", "closed_form", "triton", "peer", "peer+gate", "mipt_scan"}
        for m in methods:
            if m not in known:
                raise ValueError(f"--methods: {m!r} is not one of {sorted(known)}")
        skipped = [m for m in methods if m not in available]
        if skipped:
            print(f"not available here, skipped: {skipped}")
        methods = [m for m in methods if m in available]
    else:
        methods = available

    bench = _timer(device)
    bw = _copy_bandwidth(device, bench)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"copy bandwidth {bw / 1e12:.2f} TB/s", flush=True)

    rows = []
    sweep = adopted = None
    if args.sweep or args.sweep_only:
        if "triton" not in available:
            raise ValueError("--sweep needs the Triton kernel, which is not available on this device")
        sweep = _sweep(shapes[0], device, bench)
        if args.adopt_sweep:
            adopted = _adopt(sweep)
    for si, (B, D, L) in enumerate(shapes if not args.sweep_only else []):
        for dtype in dtypes:
            x = _inputs(B, D, L, dtype, device, seed=1000 * si + len(dtype))
            ref = _reference(x)
            n = B * L * D
            cases = [(m, c) for m in methods for c in (chunks if m == "chunked" else [None])]
            for method, chunk in cases:
                if method == "sequential" and L > SEQUENTIAL_MAX_L and not small:
                    continue
                if method.startswith("peer") and dtype != "float32":
                    continue  # the peer takes complex64 only
                if method in ("sequential", "chunked", "closed_form", "mipt_scan") and dtype != "float32":
                    continue  # these upcast p, theta to u's float32: the same computation
                row = {"method": method, "B": B, "D": D, "L": L, "dtype": dtype}
                if chunk is not None:
                    row["chunk"] = chunk
                try:
                    if method.startswith("peer"):
                        fwd, fwd_bwd, b_f, b_fb = _case_peer(x, method == "peer+gate")
                        h = fwd().transpose(1, 2)[0, :, : ref.shape[1]]
                    else:
                        fwd, fwd_bwd, b_f, b_fb = _case_ours(method, x, dtype, None if chunk == CHUNK else chunk)
                        h = fwd()[0, :, : ref.shape[1]]
                    row["rel_err"] = _rel(h, ref)
                    del h
                    row["fwd_ms"] = bench(fwd)
                    row["fwd_bwd_ms"] = bench(fwd_bwd)
                    row["bytes_fwd"] = b_f * n
                    row["bytes_fwd_bwd"] = b_fb * n
                    row["fwd_TBps"] = b_f * n / (row["fwd_ms"] * 1e-3) / 1e12
                    row["fwd_bwd_TBps"] = b_fb * n / (row["fwd_bwd_ms"] * 1e-3) / 1e12
                    row["fwd_floor_ms"] = b_f * n / bw * 1e3
                    row["fwd_bwd_floor_ms"] = b_fb * n / bw * 1e3
                except torch.OutOfMemoryError as err:
                    row["error"] = f"out of memory: {str(err)[:120]}"
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rows.append(row)
                print(_fmt_row(row), flush=True)

    import importlib.metadata as md

    def _ver(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    result = {
        "benchmark": "scan",
        "config": {"shapes_BDL": shapes, "dtypes": dtypes, "methods": methods, "smoke": small,
                   "timer": "triton.testing.do_bench median (warmup 25 ms, rep 100 ms)" if device.type == "cuda"
                   else "perf_counter median", "error_slice": f"batch row 0, first {ERR_CHANNELS} channels, all L; "
                   "float64 sequential reference on the CPU"},
        "git_commit": args.commit or git_commit() or "unknown",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "triton": _ver("triton"), "accelerated_scan": peer_version,
        "python": platform.python_version(),
        "copy_bandwidth_TBps": bw / 1e12,
        "kernel_configs": _kernel_configs(adopted) if "triton" in available else None,
        "rows": rows,
        "sweep": sweep,
        "wall_time_s": time.time() - t_start,
    }
    hw = result["device"].lower().replace("nvidia ", "").replace(" ", "_") if device.type == "cuda" else "cpu"
    out = Path(args.out) if args.out else repo_root() / "results" / "bench" / f"scan_{hw}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print()
    if sweep:
        print(f"sweep best forward {sweep['best_fwd']}, best backward {sweep['best_bwd']}, "
              f"best recompute backward {sweep['best_recompute']}")
    print(_table(rows))
    print(f"\nwrote {out} ({result['wall_time_s']:.0f} s)")
    return 0


def _parse_chunks(text: str) -> list[int]:
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if not item.isdigit() or int(item) < 2:
            raise ValueError(f"--chunks: {item!r} is not a chunk length (an int >= 2), e.g. --chunks 32,64")
        if int(item) != CHUNK and int(item) not in out:
            out.append(int(item))
    return out


def _adopt(sweep: dict) -> dict | None:
    """Make the kernel's defaults (for the rest of this benchmark process) the fastest end-to-end
    recompute case of the sweep, forward and backward configurations, if it beat the defaults; returns
    ``{"forward": ..., "recompute": ...}`` then, else None (``kernel_configs`` in the results file
    records the configurations used, and ``adopted_from_sweep`` says so)."""
    from ..ops.triton import scan as ts

    rows = [r for r in sweep.get("end_to_end", []) if r["backward"] == "recompute" and "error" not in r]
    default = next((r for r in rows if r["which"] == "default"), None)
    if not rows or default is None or ts.BACKWARD != "recompute":
        return None
    best = min(rows, key=lambda r: r["fwd_bwd_ms"])
    if best is default:
        return None
    ts.RECOMPUTE_CONFIG = tuple(best["config"])
    ts.DEFAULT_CONFIG = tuple(best["fwd_config"])
    print(f"adopted the sweep's forward {best['fwd_config']} and recompute backward {best['config']} "
          f"({best['fwd_bwd_ms']:.3f} vs {default['fwd_bwd_ms']:.3f} ms end to end)", flush=True)
    return {"forward": best["fwd_config"], "recompute": best["config"]}


def _kernel_configs(adopted: dict | None = None) -> dict:
    from ..ops.triton import scan as ts

    return {"adopted_from_sweep": adopted is not None, "forward": list(ts.DEFAULT_CONFIG), "backward": list(ts.BWD_CONFIG),
            "fields": "BLOCK_L, BLOCK_D, num_warps, fast_trig, strided, prefetch[, num_stages, rows]",
            "backward_kind": ts.BACKWARD, "recompute": list(ts.RECOMPUTE_CONFIG),
            "recompute_fields": "BLOCK_L, BLOCK_D, num_warps, shift, prefetch"}


def _fmt_row(r: dict) -> str:
    head = f"{scan_row_label(r):<15} B={r['B']:<3} D={r['D']:<5} L={r['L']:<6} {r['dtype']:<8}"
    if "error" in r:
        return head + " " + r["error"]
    return (head + f" fwd {r['fwd_ms']:8.3f} ms {r['fwd_TBps']:5.2f} TB/s  "
            f"f+b {r['fwd_bwd_ms']:8.3f} ms {r['fwd_bwd_TBps']:5.2f} TB/s  err {r['rel_err']:.1e}")


def _table(rows: list[dict]) -> str:
    lines = ["| method | B, D, L | dtype | fwd ms | fwd TB/s | fwd floor ms | f+b ms | f+b TB/s | f+b floor ms | rel err |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = scan_row_label(r)
        if "error" in r:
            lines.append(f"| {name} | {r['B']}, {r['D']}, {r['L']} | {r['dtype']} | {r['error']} |||||||")
            continue
        lines.append(f"| {name} | {r['B']}, {r['D']}, {r['L']} | {r['dtype']} | {r['fwd_ms']:.3f} | "
                     f"{r['fwd_TBps']:.2f} | {r['fwd_floor_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | "
                     f"{r['fwd_bwd_TBps']:.2f} | {r['fwd_bwd_floor_ms']:.3f} | {r['rel_err']:.1e} |")
    return "\n".join(lines)
