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
  triton       the fused Triton kernels (minimipt.ops.triton.scan) at the configurations given by
               --forward / --backward (default: the package's); bf16 inputs are given as bf16 p,
               theta and bf16 (re, im) pairs of u
  peer         accelerated_scan.complex.scan(forget, inputs) 0.3.1 on precomputed
               forget = (1-p)e^{i theta}, inputs = p*u in its (B, C, T) complex64 layout
  peer+gate    the same, with forget and inputs formed in PyTorch inside the timed region
               (still in its own (B, C, T) layout: no transposes are charged)

Bytes (the least each form must move, per complex element): ours read p, theta (4 or 2 B each) and
u (8 B, or 4 as bf16 pairs) and write h (8 B); the backward reads dL/dh, p, theta, u and writes dp,
dtheta, du (h is recomputed, not read). The peer's forward reads a and b and writes h (24 B); its
backward reads a, h, dL/dh and writes da, db (40 B). The floor is those bytes over the
device-to-device copy bandwidth measured in the same run.

``--sweep`` also times the Triton kernels at the first shape (float32) for the short, explicit lists
SWEEP_FORWARD and SWEEP_BACKWARD, each configuration passed to ``scan_triton`` as an argument; the
results file records them with the configurations the table rows used (``kernel_configs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import time
from pathlib import Path

import torch

from ..env import get_device, repo_root, smoke_mode
from ..ops import CHUNK, mipt_scan, scan_chunked, scan_methods, scan_sequential
from ..ops.scan import _REGISTRY
from ..ops.triton.scan import DEFAULT_BACKWARD, DEFAULT_FORWARD, BackwardConfig, ForwardConfig
from ..train.provenance import git_commit
from .common import copy_bandwidth, parse_shapes, scan_inputs, timer

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
    parser.add_argument("--forward", default=None, metavar="BLOCK_L,BLOCK_D,NUM_WARPS,PREFETCH",
                        help="the Triton forward's configuration for the table rows, e.g. 16,16,1,1 "
                             f"(default: the package's, {_config_text(DEFAULT_FORWARD)})")
    parser.add_argument("--backward", default=None, metavar="BLOCK_L,BLOCK_D,NUM_WARPS,PREFETCH",
                        help=f"the Triton backward's configuration (default: {_config_text(DEFAULT_BACKWARD)})")
    parser.add_argument("--sweep", action="store_true",
                        help="also time the Triton kernels at the first shape for SWEEP_FORWARD and SWEEP_BACKWARD")
    parser.add_argument("--chunks", default="",
                        help="extra chunk lengths C to time \"chunked\" with, e.g. 32,64 (the default C always runs)")
    parser.add_argument("--commit", default=None, help="git commit to record (default: read with git)")


def _config_text(cfg) -> str:
    return f"{cfg.block_l},{cfg.block_d},{cfg.num_warps},{int(cfg.prefetch)}"


def _parse_config(text: str | None, kind, option: str):
    """``kind(block_l, block_d, num_warps, prefetch)`` from ``"16,16,1,1"``; None stays None."""
    if text is None:
        return None
    parts = [t.strip() for t in text.split(",")]
    if len(parts) != 4 or not all(t.isdigit() for t in parts) or parts[3] not in ("0", "1"):
        raise ValueError(f"{option}: {text!r} is not BLOCK_L,BLOCK_D,NUM_WARPS,PREFETCH with integers and "
                         f"PREFETCH 0 or 1, e.g. {option} 16,16,1,1")
    return kind(int(parts[0]), int(parts[1]), int(parts[2]), parts[3] == "1")


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------

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


def _bytes_ours(p_dt: torch.dtype, u_bytes: int) -> tuple[int, int]:
    """Bytes per element: forward (read p, θ, u; write h) and forward+backward (also read dL/dh, p, θ, u;
    write dp, dθ, du)."""
    sp = torch.finfo(p_dt).bits // 8
    fwd = 2 * sp + u_bytes + 8
    bwd = (8 + 2 * sp + u_bytes) + (2 * sp + u_bytes)
    return fwd, fwd + bwd


def _case_ours(method: str, x: dict, dtype: str, chunk: int | None = None, kernels: dict | None = None):
    """(forward fn, forward+backward fn, bytes fwd, bytes fwd+bwd) for our methods; ``chunk``: the chunk
    length of "chunked" (None: its default); ``kernels``: "triton"'s ``forward=`` and ``backward=``."""
    lowp = dtype == "bf16"
    pdt = torch.bfloat16 if lowp else torch.float32
    p = x["p"].to(pdt)
    theta = x["theta"].to(pdt)
    gh = torch.view_as_complex(x["gh"])
    if method == "triton":
        from ..ops.triton.scan import scan_triton

        # (B, L, D, 2) narrow pairs for bf16, complex64 for float32
        u = x["u"].to(torch.bfloat16).contiguous() if lowp else torch.view_as_complex(x["u"].contiguous())
        fn = functools.partial(scan_triton, **(kernels or {}))
        u_bytes = 4 if lowp else 8
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

    b_f, b_fb = _bytes_ours(pdt, u_bytes)
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
        b_f, b_fb = _bytes_ours(torch.float32, 8)
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
# the sweep: the Triton kernels at a few explicit configurations
# ---------------------------------------------------------------------------------------------

# (block_l, block_d, num_warps, prefetch): the default first, then the runners-up of the H200 sweep that
# chose it (results/bench/scan_h200.json) and their neighbours
SWEEP_FORWARD = [DEFAULT_FORWARD] + [ForwardConfig(*c) for c in (
    (16, 16, 1, False), (32, 16, 1, True), (8, 16, 1, True), (8, 32, 1, True), (16, 32, 1, True))]
SWEEP_BACKWARD = [DEFAULT_BACKWARD] + [BackwardConfig(*c) for c in (
    (16, 32, 4, False), (16, 16, 2, True), (32, 16, 2, True), (16, 32, 2, False), (8, 16, 1, True))]


def _sweep(shape, device, bench) -> dict:
    """Each forward configuration alone (no gradient: no checkpoints), and each backward configuration
    through autograd (forward+backward with the default forward, which checkpoints every backward
    block_l rows), float32, through ``scan_triton(..., forward=, backward=)``; each result is compared
    with the defaults' (relative difference of h, or of the largest of dp, dθ, du)."""
    from ..ops.triton.scan import scan_triton

    B, D, L = shape
    x = scan_inputs(B, D, L, "float32", device, seed=123)
    p, theta, gh = x["p"], x["theta"], torch.view_as_complex(x["gh"])
    u = torch.view_as_complex(x["u"].contiguous())
    leaves = [t.detach().clone().requires_grad_() for t in (p, theta, u)]
    n = B * L * D

    def fwd(cfg):
        with torch.no_grad():
            return scan_triton(p, theta, u, forward=cfg)

    def fwd_bwd(cfg):
        return torch.autograd.grad(scan_triton(*leaves, backward=cfg), leaves, gh)

    h_ref, g_ref = fwd(DEFAULT_FORWARD), fwd_bwd(DEFAULT_BACKWARD)
    rows = []
    for kind, configs, run, ref, nbytes in (("forward", SWEEP_FORWARD, fwd, (h_ref,), 24),
                                            ("backward", SWEEP_BACKWARD, fwd_bwd, g_ref, 64)):
        for cfg in configs:
            row = {"kernel": kind, "config": dataclasses.asdict(cfg)}
            try:
                out = run(cfg)
                out = out if isinstance(out, tuple) else (out,)
                row["diff_vs_default"] = max(_rel_diff(a, b) for a, b in zip(out, ref))
                row["ms"] = bench(lambda: run(cfg))
                row["TBps"] = nbytes * n / (row["ms"] * 1e-3) / 1e12
            except Exception as err:  # a configuration that does not compile (too many registers)
                row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
            rows.append(row)
            print(f"  sweep {kind} {_config_text(cfg)}: " + (
                f"{row['ms']:.3f} ms ({row['TBps']:.2f} TB/s), diff {row['diff_vs_default']:.0e}"
                if "error" not in row else row["error"]), flush=True)
    return {"shape_BDL": list(shape), "timed": "forward alone (no grad); backward as forward+backward through "
            "autograd with the default forward", "bytes_per_element": {"forward": 24, "forward+backward": 64},
            "rows": rows}


def _rel_diff(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = torch.view_as_real(x) if x.is_complex() else x, torch.view_as_real(ref) if ref.is_complex() else ref
    return float((x.float() - ref.float()).norm() / ref.float().norm())


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    t_start = time.time()
    device = get_device(args.device)
    small = smoke_mode() or device.type != "cuda"
    shapes = parse_shapes(args.shapes) if args.shapes else (SMOKE_SHAPES if small else DEFAULT_SHAPES)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in ("float32", "bf16"):
            raise ValueError(f"--dtypes: {d!r} is not one of float32, bf16")
    chunks = [CHUNK] + _parse_chunks(args.chunks)
    kernels = {"forward": _parse_config(args.forward, ForwardConfig, "--forward") or DEFAULT_FORWARD,
               "backward": _parse_config(args.backward, BackwardConfig, "--backward") or DEFAULT_BACKWARD}
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

    bench = timer(device)
    bw = copy_bandwidth(device, bench)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"copy bandwidth {bw / 1e12:.2f} TB/s", flush=True)

    rows = []
    sweep = None
    if args.sweep:
        if "triton" not in available:
            raise ValueError("--sweep needs the Triton kernels, which are not available on this device")
        sweep = _sweep(shapes[0], device, bench)
    for si, (B, D, L) in enumerate(shapes):
        for dtype in dtypes:
            x = scan_inputs(B, D, L, dtype, device, seed=1000 * si + len(dtype))
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
                        fwd, fwd_bwd, b_f, b_fb = _case_ours(method, x, dtype, None if chunk == CHUNK else chunk,
                                                             kernels)
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
        "kernel_configs": {k: dataclasses.asdict(v) for k, v in kernels.items()} if "triton" in methods else None,
        "rows": rows,
        "sweep": sweep,
        "wall_time_s": time.time() - t_start,
    }
    hw = result["device"].lower().replace("nvidia ", "").replace(" ", "_") if device.type == "cuda" else "cpu"
    out = Path(args.out) if args.out else repo_root() / "results" / "bench" / f"scan_{hw}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print()
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
