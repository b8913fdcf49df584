"""Analysis functions behind the mechanics notebooks 04-06 (no plotting here: see ``minimipt.course.viz_mechanics``).

1. **The layer** (``04_mipt_layer``): the state trajectory of one channel with a constant gate,
   and the memory kernel ``∏_{r=1}^{k} (1 − p_r)`` of an untrained layer, from ``logsigmoid``.
2. **The scan** (``05_scan``): two *whole-sequence* closed forms of the recurrence that are
   exact in real arithmetic but fail in floating point — kept here as teaching twins, never used
   by the package — their error against a float64 reference as the length grows, and CPU timings.
3. **The cache** (``06_cache``): a synthetic gate with per-token salience, and the membership
   mask "query t can read key s" of :class:`minimipt.CausalSparseCache`.

Glossary (``minimipt/__init__.py``): B batch, L length, D state channels, d model width, K slots.
Random functions take a ``seed`` and use their own ``torch.Generator``.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..bench.scan import scan_row_label

__all__ = [
    "impulse_trajectory",
    "layer_memory_kernel",
    "scan_cumprod",
    "scan_logspace",
    "random_scan_inputs",
    "scan_error_vs_length",
    "time_scan",
    "chunk_tradeoff",
    "chunked_launches",
    "load_bench",
    "bench_table",
    "synthetic_log_p",
    "cache_membership",
]

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


# --------------------------------------------------------------------------------------------
# the layer
# --------------------------------------------------------------------------------------------

def impulse_trajectory(p_bias: float, theta_bias: float, L: int = 64,
                       impulses: Sequence[tuple[int, complex]] = ((0, 1.0),)) -> dict:
    """The state of one channel of a real :class:`minimipt.MIPTLayer` whose gate and phase see no input.

    A one-channel layer (``d_model = D = 1``, no norm) with zero gate and phase weights has the
    constant rate ``p = σ(b_p)`` and phase ``θ = b_θ``; ``u_t = x_t`` (real weight 1, imaginary 0).
    Feeding ``x_t = Σ c δ_{t, s}`` for the ``(s, c)`` in ``impulses`` gives

        h_t = Σ_{s ≤ t} c_s · p · ((1 − p) e^{iθ})^{t − s}          (a superposition of spirals)

    Returns ``{"h": complex (L,), "p": float, "theta": float, "memory": 1/p}``.
    """
    from ..layer import MIPTLayer

    if not isinstance(L, int) or L < 1:
        raise ValueError(f"L must be a positive int, got {L!r}")
    layer = MIPTLayer(1, scan_method="sequential").double()
    with torch.no_grad():
        layer.in_proj.weight.zero_()
        layer.in_proj.weight[2, 0] = 1.0  # u_re = x
        layer.in_proj.bias.copy_(torch.tensor([float(p_bias), float(theta_bias), 0.0, 0.0]))
    x = torch.zeros(1, L, 1, dtype=torch.float64)
    for s, c in impulses:
        if not 0 <= s < L:
            raise ValueError(f"impulse position {s} is outside [0, L={L})")
        if complex(c).imag != 0:
            raise ValueError(f"impulses enter through u_re and must be real; got {c!r}")
        x[0, s, 0] += complex(c).real
    with torch.no_grad():
        _, aux = layer(x, return_aux=True)
    p = float(torch.sigmoid(torch.tensor(float(p_bias), dtype=torch.float64)))
    return {"h": aux.h[0, :, 0], "p": p, "theta": float(theta_bias), "memory": 1.0 / p}


def layer_memory_kernel(layer, x: torch.Tensor) -> torch.Tensor:
    """How much of the first token survives ``k`` more steps, per channel: ``(L, D)``.

    ``kernel[k, d] = |coefficient of u_0 in h_k| / p_0 = ∏_{r=1}^{k} (1 − p_{r,d})`` for the rates
    the layer computes on ``x`` (shape ``(1, L, d)``), evaluated in log space as
    ``exp(cumsum(logsigmoid(−z)))`` so that long products neither underflow early nor lose digits.
    """
    if x.dim() != 3 or x.shape[0] != 1:
        raise ValueError(f"x must have shape (1, L, d_model); got {tuple(x.shape)}")
    with torch.no_grad():
        z, _, _ = layer.projections(x)  # (1, L, D)
        log_keep = F.logsigmoid(-z[0])  # (L, D): log(1 − p)
        log_keep = torch.cat([torch.zeros_like(log_keep[:1]), log_keep[1:]], 0)  # k = 0: nothing survived yet
        return torch.exp(torch.cumsum(log_keep, 0))


# --------------------------------------------------------------------------------------------
# whole-sequence closed forms (teaching twins: exact in real arithmetic, fragile in floats)
# --------------------------------------------------------------------------------------------

def _prepend_h0(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None):
    """Fold ``h0`` in as an extra first step with ``a = 1`` and ``b = h0`` (its output is dropped)."""
    if h0 is None:
        return a, b, 0
    one = torch.ones_like(a[:, :1])
    return torch.cat([one, a], 1), torch.cat([h0.to(b.dtype)[:, None], b], 1), 1


def _gate(p, theta, u):
    real = u.real.dtype
    return torch.polar(1 - p.to(real), theta.to(real)), p.to(real) * u  # a, b: (B, L, D)


def scan_cumprod(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor,
                 h0: torch.Tensor | None = None) -> torch.Tensor:
    """``A_t = ∏_{r ≤ t} a_r``, ``h_t = A_t · Σ_{s ≤ t} b_s / A_s`` over the whole sequence.

    Same signature as :func:`minimipt.mipt_scan`'s methods. Exact in real arithmetic; in floating
    point ``A_t`` underflows once ``∏|a_r| = ∏(1 − p_r)`` drops below the smallest float
    (about ``1e-38`` in float32), after which ``b / A`` is ``inf`` and ``h`` is NaN.
    """
    a, b = _gate(p, theta, u)
    a, b, k = _prepend_h0(a, b, h0)
    A = torch.cumprod(a, dim=1)  # (B, L, D)
    return (A * torch.cumsum(b / A, dim=1))[:, k:]


def scan_logspace(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor,
                  h0: torch.Tensor | None = None) -> torch.Tensor:
    """Heinsen's log-space form: ``log h_t = a*_t + logcumsumexp_{s ≤ t}(log b_s − a*_s)``, ``a*_t = Σ_{r ≤ t} log a_r``.

    Complex logarithms carry the phase: ``log a = log(1 − p) + iθ``. Nothing under- or overflows,
    but ``log h_t`` is the sum of two terms of size ``|a*_t|``, which grows linearly with ``t``:
    float32 keeps ``~7`` significant digits of each, so the relative error of ``h`` grows like
    ``|a*_t| · 6e-8``. Inputs with ``b_s = 0`` give ``log b = −inf`` (allowed).
    """
    a, b = _gate(p, theta, u)
    a, b, k = _prepend_h0(a, b, h0)
    log_a = torch.complex(torch.log(a.abs()), torch.angle(a))  # log(1 − p) + iθ (and log 1 = 0 for h0)
    a_star = torch.cumsum(log_a, dim=1)  # (B, L, D) complex
    log_b = torch.complex(torch.log(b.abs()), torch.angle(b))
    log_h = a_star + torch.logcumsumexp(log_b - a_star, dim=1)
    return torch.exp(log_h)[:, k:]


def random_scan_inputs(B: int, L: int, D: int, p_range: tuple[float, float] = (1e-3, 0.1),
                       dtype: torch.dtype = torch.float64, seed: int = 0):
    """``(p, θ, u)`` like an untrained layer's: ``p`` log-uniform per channel in ``p_range`` times a
    per-token factor in ``[0.5, 2]`` (clipped below 1), ``θ`` uniform in ``[−π/2, π/2]``, ``u`` complex
    Gaussian. Shapes ``(B, L, D)``; ``u`` in the complex dtype of ``dtype``."""
    lo, hi = p_range
    if not 0 < lo <= hi < 1:
        raise ValueError(f"p_range must satisfy 0 < low <= high < 1, got {p_range}")
    g = torch.Generator().manual_seed(seed)
    base = torch.exp(torch.empty(B, 1, D, dtype=torch.float64).uniform_(math.log(lo), math.log(hi), generator=g))
    p = (base * torch.exp(torch.empty(B, L, D, dtype=torch.float64).uniform_(-0.7, 0.7, generator=g))).clamp(max=0.999)
    theta = torch.empty(B, L, D, dtype=torch.float64).uniform_(-math.pi / 2, math.pi / 2, generator=g)
    u = torch.complex(torch.randn(B, L, D, dtype=torch.float64, generator=g),
                      torch.randn(B, L, D, dtype=torch.float64, generator=g))
    return p.to(dtype), theta.to(dtype), u.to(_COMPLEX[dtype])


def _method_fn(name: str):
    from ..ops import mipt_scan

    if name == "cumprod":
        return scan_cumprod
    if name == "logspace":
        return scan_logspace
    return lambda p, theta, u: mipt_scan(p, theta, u, method=name)


def scan_error_vs_length(lengths: Sequence[int], methods: Sequence[str] = ("cumprod", "logspace", "chunked"),
                         dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64), B: int = 2, D: int = 32,
                         p_range: tuple[float, float] = (1e-3, 0.1), seed: int = 0) -> dict:
    """Relative error ``‖h − h_ref‖ / ‖h_ref‖`` of each method and dtype on sequences of each length.

    ``h_ref`` is the float64 ``"sequential"`` scan of the same inputs (:func:`random_scan_inputs`,
    one draw of the longest length, cut to each length). A method whose output holds NaN or inf
    gets error ``inf``. ``methods``: ``"cumprod"``, ``"logspace"`` or any :func:`minimipt.mipt_scan`
    method. Returns ``{"L": [...], "error": {(method, dtype name): [...]}, ...}``.
    """
    from ..ops import scan_sequential

    lengths = sorted(int(n) for n in lengths)
    if not lengths or lengths[0] < 1:
        raise ValueError(f"lengths must be positive ints, got {lengths}")
    p, theta, u = random_scan_inputs(B, lengths[-1], D, p_range, torch.float64, seed)
    ref = scan_sequential(p, theta, u)  # (B, L, D) complex128
    error: dict[tuple[str, str], list[float]] = {}
    for method in methods:
        fn = _method_fn(method)
        for dt in dtypes:
            pd, td, ud = p.to(dt), theta.to(dt), u.to(_COMPLEX[dt])
            errs = []
            for n in lengths:
                with torch.no_grad():
                    h = fn(pd[:, :n], td[:, :n], ud[:, :n]).to(torch.complex128)
                r = ref[:, :n]
                ok = bool(torch.isfinite(torch.view_as_real(h)).all())
                errs.append(float((h - r).abs().norm() / r.abs().norm()) if ok else math.inf)
            error[(method, str(dt).replace("torch.", ""))] = errs
    return {"L": lengths, "error": error, "B": B, "D": D, "p_range": tuple(p_range)}


def time_scan(method: str, B: int, L: int, D: int, backward: bool = True, repeats: int = 5,
              seed: int = 0) -> float:
    """Median wall time in milliseconds (``time.perf_counter``, this machine) of one
    :func:`minimipt.mipt_scan` call on float32 inputs, with its backward pass if ``backward``.
    One untimed warm-up call first."""
    from ..ops import mipt_scan

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    p, theta, u = random_scan_inputs(B, L, D, dtype=torch.float32, seed=seed)
    gh = torch.randn(B, L, D, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed + 1))
    leaves = [t.requires_grad_() for t in (p, theta, u)]

    def once():
        if backward:
            torch.autograd.grad(mipt_scan(*leaves, method=method), leaves, gh)
        else:
            with torch.no_grad():
                mipt_scan(p, theta, u, method=method)

    once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def chunk_tradeoff(chunks: Sequence[int], dtype: torch.dtype = torch.float32, L: int = 1024, B: int = 2,
                   D: int = 32, p_range: tuple[float, float] = (1e-3, 0.1), repeats: int = 3, seed: int = 0) -> dict:
    """Error and CPU time of :func:`minimipt.ops.scan_chunked` against its chunk length ``C``.

    For each ``C`` in ``chunks``: the relative error ``‖h − h_ref‖ / ‖h_ref‖`` in ``dtype`` against the float64
    ``"sequential"`` scan of the same inputs (:func:`random_scan_inputs`), and the median forward time in
    milliseconds over ``repeats`` calls after one warm-up (``time.perf_counter``, this machine), with the
    sequential loop's time for scale. Returns ``{"chunk", "error", "ms", "sequential_ms", ...}``.
    """
    from ..ops import scan_chunked, scan_sequential

    chunks = [int(c) for c in chunks]
    if not chunks or min(chunks) < 2:
        raise ValueError(f"chunks must be ints >= 2 (chunk lengths), got {chunks}")
    if dtype not in _COMPLEX:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    p, theta, u = random_scan_inputs(B, L, D, p_range, torch.float64, seed)
    ref = scan_sequential(p, theta, u)  # (B, L, D) complex128
    pd, td, ud = p.to(dtype), theta.to(dtype), u.to(_COMPLEX[dtype])

    def timed(fn):
        with torch.no_grad():
            out = fn()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return out, statistics.median(times)

    errors, ms = [], []
    for c in chunks:
        h, t = timed(lambda: scan_chunked(pd, td, ud, chunk=c))
        errors.append(float((h.to(torch.complex128) - ref).abs().norm() / ref.abs().norm()))
        ms.append(t)
    _, seq_ms = timed(lambda: scan_sequential(pd, td, ud))
    return {"chunk": chunks, "error": errors, "ms": ms, "sequential_ms": seq_ms,
            "dtype": str(dtype).replace("torch.", ""), "L": L, "B": B, "D": D, "p_range": tuple(p_range)}


def chunked_launches(L: int, chunk: int | None = None, B: int = 1, D: int = 4) -> int:
    """How many multiply-add kernels (``torch.addcmul`` calls) one forward of the package's chunked scan
    launches at length ``L``, counted while it runs. Each is one step of a dependent chain (a Horner step
    over all chunks at once, or a step of a carry recurrence), so this is the scan's sequential depth in
    launches; the loop needs ``L``."""
    from unittest import mock

    from ..ops import CHUNK, scan_chunked

    p, theta, u = random_scan_inputs(B, L, D, dtype=torch.float32)
    with mock.patch.object(torch, "addcmul", wraps=torch.addcmul) as counted, torch.no_grad():
        scan_chunked(p, theta, u, chunk=CHUNK if chunk is None else chunk)
    return counted.call_count


def load_bench(folder: str | Path | None = None, pattern: str = "scan_*.json") -> list[dict]:
    """The scan benchmark results (``python -m minimipt.bench scan``) in ``folder`` (default
    ``results/bench`` of the repository) that hold timing rows, in file-name order, each with its
    file name added as ``"file"``; ``[]`` if there are none."""
    from ..env import repo_root

    folder = Path(folder) if folder is not None else repo_root() / "results" / "bench"
    out = []
    for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
        result = json.loads(path.read_text())
        if isinstance(result, dict) and result.get("rows"):
            out.append({**result, "file": path.name})
    return out


def bench_table(result: dict) -> str:
    """A Markdown table of one benchmark result, headed by its hardware, software and commit."""
    if "rows" not in result:
        raise ValueError("result must be a scan benchmark result (a dict with 'rows'), from load_bench()")
    head = (f"`{result['file']}`: " if "file" in result else "") + (
        f"**{result.get('device', '?')}**, torch {result.get('torch', '?')}, triton {result.get('triton')}, "
        f"commit {str(result.get('git_commit', '?'))[:10]}, timer: {result.get('config', {}).get('timer', '?')}")
    lines = [head, "", "| method | B, D, L | dtype | fwd ms | fwd+bwd ms | fwd TB/s | rel err |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        shape = f"{r['B']}, {r['D']}, {r['L']}"
        if "error" in r:
            lines.append(f"| {scan_row_label(r)} | {shape} | {r['dtype']} | {r['error']} | | | |")
        else:
            lines.append(f"| {scan_row_label(r)} | {shape} | {r['dtype']} | {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | "
                         f"{r['fwd_TBps']:.2f} | {r['rel_err']:.1e} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the cache
# --------------------------------------------------------------------------------------------

def synthetic_log_p(L: int, D: int, contrast: float = 2.0, bias: float = -4.0, noise: float = 0.5,
                    seed: int = 0) -> torch.Tensor:
    """``log p`` ``(1, L, D)`` of a gate with per-token salience (a stand-in for a trained layer).

    ``z_{t,d} = bias + contrast · n_t + noise · ε_{t,d}`` with ``n_t, ε_{t,d} ~ N(0, 1)``: every channel
    "measures" the salient tokens (large ``n_t``) more, and each channel adds its own noise.
    ``log p = logsigmoid(z)``. With ``contrast = 0`` and ``noise = 0`` every token has the same rates,
    hence the same write score; with ``contrast = 0`` and ``noise > 0`` the scores still differ from token
    to token (through the channel noise), at random.
    """
    if L < 1 or D < 1:
        raise ValueError(f"L and D must be >= 1, got L={L}, D={D}")
    for name, value in (("contrast", contrast), ("noise", noise)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    g = torch.Generator().manual_seed(seed)
    salience = torch.randn(1, L, 1, generator=g)  # (1, L, 1)
    eps = torch.randn(1, L, D, generator=g)  # (1, L, D); drawn even when unused, so that seeds agree
    return F.logsigmoid(bias + contrast * salience + noise * eps)


def cache_membership(log_p: torch.Tensor, slots: int | None, threshold: float = 0.0) -> dict:
    """Which keys each query can read in :class:`minimipt.CausalSparseCache`.

    ``log_p``: ``(B, L, D)``. Returns ``{"held": bool (B, L, L)`` with ``held[b, t, s]`` = "position s
    is in the cache when the query at t reads", ``"log_w"`` ``(B, L)``, ``"eligible"`` ``(B, L)``,
    ``"evict"`` ``(B, L)``, ``"used"`` ``(B, L)`` slots in use at each t}``; built from the cache
    module's own :func:`~minimipt.cache.write_scores`, :func:`~minimipt.cache.eligible_mask` and
    :func:`~minimipt.cache.eviction_times`.
    """
    from ..cache import check_cache_slots
    from ..ops.eviction import eviction_times
    from ..ops.reference import eligible_mask, write_scores

    check_cache_slots(slots)
    log_w = write_scores(log_p)  # (B, L)
    eligible = eligible_mask(log_w, threshold)
    evict = eviction_times(log_w, eligible, slots)  # (B, L)
    L = log_w.shape[1]
    pos = torch.arange(L)
    held = (pos[None, :, None] >= pos[None, None, :]) & (pos[None, :, None] < evict[:, None, :])  # (B, t, s)
    return {"held": held, "log_w": log_w, "eligible": eligible, "evict": evict, "used": held.sum(-1)}
