"""Helpers shared by several test modules (``from tests._support import ...``); no tests here.

Sections: the repository root; models and their streaming; inputs of the scan and the cache;
summary rows of the course's tables; Triton (availability, markers, the interpreter subprocess).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minimipt import MIPTLM
from minimipt.course.runs import SeedStat
from minimipt.ops.reference import write_scores

ROOT = Path(__file__).resolve().parent.parent  # the repository
# n_train, n_val, n_test of a needle run with 3 steps per epoch of the smoke preset
SMALL_SPLITS = dict(n_train=96, n_val=16, n_test=16)


def png(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes (proves it draws; compares two renderings)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@torch.no_grad()
def assert_causal(model, vocab_size: int, batch: int, length: int, positions, seed: int) -> None:
    """Perturbing tokens from position t on leaves the logits before t unchanged, and changes them at t."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (batch, length), generator=gen)
    ref = model(tokens)
    for t in positions:
        other = tokens.clone()
        other[:, t:] = torch.randint(0, vocab_size, (batch, length - t), generator=gen)
        out = model(other)
        torch.testing.assert_close(out[:, :t], ref[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, t], ref[:, t])  # the perturbation is visible where it happens


@torch.no_grad()
def assert_greedy_generation_matches_forward(model, vocab_size: int, batch: int, prompt_len: int,
                                             new_tokens: int, seed: int = 4):
    """``generate(do_sample=False)`` (parallel prefill, then ``step``) appends, at each position, the
    argmax of the parallel forward's logits there; returns the prompt used."""
    prompt = torch.randint(0, vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(seed))
    out = model.generate(prompt, new_tokens, do_sample=False)
    total = prompt_len + new_tokens
    assert out.shape == (batch, total) and torch.equal(out[:, :prompt_len], prompt)
    for t in range(prompt_len, total):
        assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])
    return prompt


def small_lm(vocab_size: int, cache_slots=0, write_threshold=0.0, tied_scores: bool = False, **kw) -> MIPTLM:
    """A small MIPT LM (d 16, 2 layers, 2 cache heads) in eval mode.

    ``write_threshold="split"`` sets each layer's τ between the two middle write scores of a probe
    batch, so that the threshold really excludes about half of the tokens. ``tied_scores``: the gate
    rows of every layer are zero, so every token has the same write score (ties everywhere: the
    cache keeps the most recent eligible tokens).
    """
    torch.manual_seed(0)
    split = write_threshold == "split"
    model = MIPTLM(vocab_size, 16, 2, cache_slots=cache_slots, write_threshold=0.0 if split else write_threshold,
                   cache_heads=2, **kw).eval()
    with torch.no_grad():
        if tied_scores:
            for block in model.blocks:
                block.mixer.in_proj.weight[:block.mixer.d_state] = 0
        if split:
            x = model.embed(torch.randint(0, vocab_size, (3, 20), generator=torch.Generator().manual_seed(99)))
            for block in model.blocks:
                D = block.mixer.d_state
                block.mixer.in_proj.weight[:D] *= 30  # spread the rates so that w varies by token
                xh = block.norm(x)
                w = write_scores(block.mixer(xh, return_aux=True)[1].log_p).exp().flatten().sort().values
                block.cache.write_threshold = float(w[len(w) // 2 - 1:len(w) // 2 + 1].mean())
                x = block(x)
    return model


def stream(model, tokens: torch.Tensor, state=None):
    """``step`` over every position of ``tokens`` ``(B, L)`` from ``state`` (a fresh one if None):
    the logits ``(B, L, V)`` and the final state."""
    state = model.init_state(tokens.shape[0]) if state is None else state
    out = []
    for t in range(tokens.shape[1]):
        logits, state = model.step(tokens[:, t], state)
        out.append(logits)
    return torch.stack(out, 1), state


# ---------------------------------------------------------------------------------------------
# the scan's inputs
# ---------------------------------------------------------------------------------------------

def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    """``‖x − ref‖ / ‖ref‖`` (x cast to ref's dtype; no gradient)."""
    x, ref = x.detach().to(ref.dtype), ref.detach()
    return float((x - ref).abs().norm() / ref.abs().norm().clamp_min(1e-300))


REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64}


def make_inputs(B, L, D, mode, cdtype, seed=0, h0=True):
    """p, θ, u, h0 (or None) of ``mipt_scan`` in ``cdtype``; ``mode`` picks p: "random", "near0",
    "near1" or "mixed" (each entry near 0 or near 1)."""
    g = torch.Generator().manual_seed(seed)
    real = REAL[cdtype]
    if mode == "random":
        p = torch.rand(B, L, D, generator=g, dtype=real)
    elif mode == "near0":
        p = torch.full((B, L, D), 1e-6, dtype=real)
    elif mode == "near1":
        p = torch.full((B, L, D), 1 - 1e-6, dtype=real)
    elif mode == "mixed":
        pick = torch.rand(B, L, D, generator=g) < 0.5
        p = torch.where(pick, torch.tensor(1e-6, dtype=real), torch.tensor(1 - 1e-6, dtype=real))
    else:
        raise AssertionError(mode)
    theta = 3 * torch.randn(B, L, D, generator=g, dtype=real)
    u = torch.randn(B, L, D, generator=g, dtype=cdtype)
    h = torch.randn(B, D, generator=g, dtype=cdtype) if h0 else None
    return p, theta, u, h


def scan_inputs(B=2, L=9, D=3, cdtype=torch.complex64, seed=0):
    """p ∈ [0, 1), θ, u, h0 of ``mipt_scan`` in ``cdtype`` (a small default shape)."""
    g = torch.Generator().manual_seed(seed)
    real = REAL[cdtype]
    return (torch.rand(B, L, D, generator=g, dtype=real), torch.randn(B, L, D, generator=g, dtype=real),
            torch.randn(B, L, D, generator=g, dtype=cdtype), torch.randn(B, D, generator=g, dtype=cdtype))


def close_to(h, ref, scale):
    """``h`` equals ``ref`` to the precision of its dtype, relative to the inputs' magnitude ``scale``."""
    tol = 1e-10 if h.dtype == torch.complex128 else 2e-6
    return h.shape == ref.shape and h.dtype == ref.dtype and \
        bool(((h - ref).abs() <= tol * scale * (1 + torch.arange(h.shape[1]).view(1, -1, 1))).all())


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---------------------------------------------------------------------------------------------
# the cache's inputs
# ---------------------------------------------------------------------------------------------

def log_w_scores(B, L, ties, gen):
    """Write scores log w ``(B, L)`` in float64, from few distinct values with ``ties``."""
    if ties:  # few distinct values: exercises the tie rule (the more recent wins)
        return torch.randint(0, 3, (B, L), generator=gen).double() - 3.0
    return torch.randn(B, L, generator=gen, dtype=torch.float64) - 2.0


def cache_problem(B, L, H, dh, threshold=0.0, ties=False, seed=0, device="cpu"):
    """float64 q, k, v ``(B, L, H, d_h)`` (strided views of one projection, as the cache makes them),
    log w ``(B, L)`` (rounded to one decimal with ``ties``), eligible, and an output gradient."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, L, 3 * H * dh, generator=g, dtype=torch.float64)
    q, k, v = (x.reshape(B, L, H, dh) for x in qkv.chunk(3, dim=-1))
    log_w = torch.randn(B, L, generator=g, dtype=torch.float64) - 1
    if ties:
        log_w = log_w.round(decimals=1)
    eligible = torch.rand(B, L, generator=g) >= threshold
    gout = torch.randn(B, L, H, dh, generator=g, dtype=torch.float64)
    return [x.to(device) for x in (q, k, v, log_w, eligible, gout)]


# ---------------------------------------------------------------------------------------------
# summary rows of the course's result tables
# ---------------------------------------------------------------------------------------------

def summary_row(variant, values, **extra):
    """A grid summary row (as ``minimipt.course.runs.summarise`` makes them) of one variant with these
    held-out accuracies, one per seed."""
    return {"variant": variant, "seeds": list(range(len(values))), "lr": 1e-3, "lrs_tried": [1e-3],
            "params": {"total": 10, "non_embedding": 5}, "protocol": "p", "hardware": "cpu",
            "eval_accuracy": SeedStat.of(values), **extra}


def recall_row(model, L, P, acc, k=0, d=64):
    """A summary row of an MQAR cell: ``model`` at length L with P pairs, cache K = k, width d."""
    config = {"task": "mqar", "model": model, "cache_slots": k, "seq_len": L, "n_pairs": P, "d_model": d,
              "eval_lengths": [], "extra": {}}
    name = "Transformer (sdpa)" if model == "transformer" else ("MIPT (no cache)" if not k else f"MIPT (cache K={k})")
    return {**summary_row(f"{name}, L={L}, pairs={P}", [acc]), "config": config}


# an MQAR grid whose capacity verdicts are known (see tests/course/test_recall.py)
RECALL_ROWS = [
    *[recall_row("transformer", 512, P, 1.0) for P in (8, 32, 128)],
    *[recall_row("mipt", 512, P, a) for P, a in ((8, 0.99), (32, 0.95), (128, 0.3))],  # D = 64: agrees
    *[recall_row("mipt", 512, P, a, k=16, d=54) for P, a in ((8, 0.99), (32, 0.97), (128, 0.2))],  # 32 > 16
    *[recall_row("mipt", 512, P, a, k=64, d=54) for P, a in ((8, 0.2), (32, 0.1), (128, 0.05))],  # none
    recall_row("transformer", 128, 8, 0.995),
]


# ---------------------------------------------------------------------------------------------
# Triton
# ---------------------------------------------------------------------------------------------

def has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and has_triton()),
                               reason="needs a CUDA device and Triton")
interpreted = pytest.mark.skipif(not (interpreting() and has_triton()),
                                 reason="runs in the subprocess of test_kernels_under_the_cpu_interpreter")
DEV = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def float32_problem(B, L, D, p_mode, seed, with_h0=True):
    """float64 tensors on the CPU holding float32 values: p, theta, u, h0 (or None), gout."""
    g = torch.Generator().manual_seed(seed)
    if p_mode == "near0":
        p = torch.full((B, L, D), 1e-6, dtype=torch.float64)
    elif p_mode == "near1":
        p = torch.full((B, L, D), 1 - 1e-6, dtype=torch.float64)
    elif p_mode == "uniform":  # away from 0 and 1 (bf16 rounds 1 - 1e-6 to exactly 1)
        p = 0.01 + 0.98 * torch.rand(B, L, D, generator=g, dtype=torch.float64)
    else:  # mixed: all three regimes, channel by channel
        p = torch.rand(B, L, D, generator=g, dtype=torch.float64)
        p[..., 0::3] = 1e-6
        # near 1 but never exactly 1 after float32 rounding: at p = 1 torch.polar's backward (used by
        # the reference) drops the gate's term of dL/dp (sgn(0) = 0), while the kernel keeps it
        p[..., 1::3] = 1 - 1e-6 * (0.5 + torch.rand(B, L, len(range(1, D, 3)), generator=g, dtype=torch.float64))
    theta = 3 * torch.randn(B, L, D, generator=g, dtype=torch.float64)
    u = torch.randn(B, L, D, generator=g, dtype=torch.complex128)
    h0 = torch.randn(B, D, generator=g, dtype=torch.complex128) if with_h0 else None
    gout = torch.randn(B, L, D, generator=g, dtype=torch.complex128)
    # rounded to float32, so the float64 reference computes the function the kernel is given
    return f32(p).double(), f32(theta).double(), f32(u).to(u.dtype), None if h0 is None else f32(h0).to(h0.dtype), gout


def f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.complex64 if t.is_complex() else torch.float32)


def _share_the_interpreters_patch() -> None:
    """Speed up Triton's interpreter about threefold without changing what it computes: it re-patches
    ``triton.language`` on every device-function call (most of its time here); patch each language
    module once per kernel launch instead, and undo everything when the launch ends. Nothing changes
    if Triton's interpreter is laid out differently."""
    import inspect

    import triton.language as tl
    import triton.runtime.interpreter as interp

    patch = getattr(interp, "_patch_lang", None)
    if patch is None or getattr(patch, "shared", False):
        return
    state = {"patched": None, "scopes": []}

    class _Nothing:
        def restore(self):
            pass

    def langs(fn) -> frozenset:
        return frozenset(id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in (tl, tl.core))

    def patch_once(fn):
        if state["patched"] is not None and langs(fn) <= state["patched"]:
            return _Nothing()  # a device function of the running kernel: already patched
        scope = patch(fn)
        if state["patched"] is not None:
            state["patched"] |= langs(fn)
            state["scopes"].append(scope)
            return scope
        state["patched"] = set(langs(fn))  # a kernel launch: undo all when it ends
        restore = scope.restore

        def restore_all():
            while state["scopes"]:
                state["scopes"].pop().restore()
            state["patched"] = None
            restore()
        scope.restore = restore_all
        return scope

    patch_once.shared = True
    interp._patch_lang = patch_once


if interpreting() and has_triton():
    _share_the_interpreters_patch()


def run_interpreted(test_file: str) -> None:
    """Run ``test_file``'s ``test_interpreted_*`` tests in a pytest subprocess under Triton's interpreter."""
    if not has_triton():
        pytest.skip("needs Triton (pip install triton)")
    if interpreting():
        pytest.skip("already under the interpreter: the test_interpreted_* tests run in this process")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:nbval", "-o", "addopts=",
           "-k", "interpreted", str(Path(test_file).resolve())]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TRITON_INTERPRET="1"),
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0 and " passed" in out.stdout and "skipped" not in out.stdout, \
        out.stdout[-6000:] + out.stderr[-2000:]
