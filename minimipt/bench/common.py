"""What the benchmarks share: a timer (``triton.testing.do_bench`` on CUDA, ``perf_counter`` repeats on
the CPU), the device's copy bandwidth, shape parsing and the scan's random inputs."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

__all__ = ["timer", "copy_bandwidth", "parse_shapes", "scan_inputs"]


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--shapes: {item!r} is not BxDxL with positive integers (e.g. 32x512x8192)")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA kernels run asynchronously; the CPU needs no wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timer(device: torch.device):
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


def copy_bandwidth(device: torch.device, bench) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + written)."""
    n = (1 << 28) if device.type == "cuda" else (1 << 22)  # 1 GiB of float32 on the GPU
    x = torch.randn(n, device=device)
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * x.numel() * x.element_size() / (ms * 1e-3)


def scan_inputs(B: int, D: int, L: int, dtype: str, device: torch.device, seed: int):
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


def results_path(out: str | None, benchmark: str, device: torch.device) -> Path:
    """``out``, else ``results/bench/<benchmark>_<GPU name or cpu>.json``; its folder is created."""
    hw = torch.cuda.get_device_name(device).replace(" ", "_") if device.type == "cuda" else "cpu"
    path = Path(out or f"results/bench/{benchmark}_{hw}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path

