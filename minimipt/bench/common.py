"""What the benchmarks share: timers (``triton.testing.do_bench`` on CUDA, ``perf_counter`` repeats on
the CPU; whole calls waited for on the device; a :class:`~minimipt.decoding.Decoder` step by step),
the device's copy bandwidth, shape parsing, the scan's random inputs and the language models compared."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

__all__ = ["timer", "timed", "median_ms", "time_decoder", "copy_bandwidth", "parse_shapes", "scan_inputs",
           "lm_makers", "results_path", "sync", "VOCAB"]

#: vocabulary of the benchmarks' language models: small, so that embeddings do not dominate
VOCAB = 256


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


def timed(fn, device: torch.device):
    """``(seconds, result)`` of one call of ``fn()``, waiting for the device before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def median_ms(fn, device: torch.device, repeats: int) -> float:
    """Median over ``repeats`` calls of ``fn()`` of its wall time in milliseconds (device waited for)."""
    return statistics.median(timed(fn, device)[0] for _ in range(repeats)) * 1e3


def time_decoder(model, state, mode: str, feed: torch.Tensor, device: torch.device, repeats: int):
    """``(decoder, setup_s, ms_per_token)`` of a :class:`~minimipt.decoding.Decoder` in ``mode``.

    ``setup_s`` is the decoder's construction and three warm-up steps (compilation in ``compile``
    mode, capture in ``graph`` mode, lazy initialisation); ``ms_per_token`` the median over
    ``repeats`` of ``feed``'s ``(steps, B)`` tokens fed back to back, divided by the steps.
    """
    from ..decoding import Decoder

    if mode == "compile":
        torch._dynamo.reset()  # a fresh compile per measurement: no recompilation limit reached across runs

    def setup():
        dec = Decoder(model, state, mode=mode)
        for t in range(3):
            dec.step(feed[t % len(feed)])
        return dec

    setup_s, dec = timed(setup, device)
    ms = median_ms(lambda: [dec.step(tok) for tok in feed], device, repeats)
    return dec, setup_s, ms / len(feed)


def lm_makers(names: list[str], d: int, layers: int, max_len: int) -> dict:
    """``{name: make}`` where ``make()`` builds a fresh language model of ``d`` width, ``layers`` layers and
    :data:`VOCAB` tokens: ``mipt`` (no cache), ``mipt-fused`` (the fused Triton mixer on CUDA),
    ``mipt-K<k>[-<cache method>]`` (a K-slot cache, its batched path forced or ``auto``), ``sdpa`` and
    ``naive`` (Transformers of 4 heads, ``max_len`` positions)."""
    from ..models import MIPTLM
    from ..transformer import TransformerLM

    out = {}
    for name in names:
        k, _, method = name[6:].partition("-") if name.startswith("mipt-K") else ("", "", "")
        if name == "mipt":
            out[name] = lambda: MIPTLM(VOCAB, d, layers, cache_slots=0)
        elif name == "mipt-fused":
            out[name] = lambda: MIPTLM(VOCAB, d, layers, cache_slots=0, fused_mixer=True)
        elif k.isdigit():
            out[name] = lambda k=int(k), m=method or "auto": MIPTLM(VOCAB, d, layers, cache_slots=k, cache_method=m)
        elif name in ("sdpa", "naive"):
            out[name] = lambda a=name: TransformerLM(VOCAB, d, layers, n_heads=4, attention=a, max_len=max_len)
        else:
            raise ValueError(f"unknown model {name!r}; use mipt, mipt-fused, mipt-K<k>[-<cache method>] "
                             f"(e.g. mipt-K64, mipt-K64-blocked), sdpa or naive")
    return out


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

