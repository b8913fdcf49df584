"""Memory and speed against sequence length: MIPT vs Transformer (SDPA and naive attention) and HGRN.

Training: peak device memory of one forward + backward step and training tokens/s, for language
models of identical width, depth and batch (default d_model 128, 2 layers, batch 8, as in the
reference measurements), a 256-token vocabulary so that embeddings do not dominate, bf16 autocast on
CUDA. ``naive`` attention materialises the (B, H, N, N) softmax, as the paper's baseline did;
``sdpa`` is PyTorch's fused attention; ``hgrn`` is flash-linear-attention's ``HGRNForCausalLM``
(its chunked Triton kernels; the optional ``bench`` extra, skipped with a note when not installed),
the nearest production model. ``mipt-K<k>`` has a K-slot cache (its batched path by
``method="auto"``), ``mipt-K<k>-<method>`` forces one (e.g. ``mipt-K64-blocked``). Lengths that run
out of memory are recorded as ``OOM``. Every row records the model's parameter count; the
``ratios`` section compares each cached model with ``mipt`` (step time and peak memory) and every
MIPT model's tokens/s with HGRN's, at every length.

Decoding: per-token latency and the streaming state's memory after a context of n tokens, for MIPT
(a complex state per layer plus K cache slots: constant) and the Transformer (a KV cache that grows
with n). The Transformer's KV cache is filled with random keys/values of the right shape (the
latency of one step depends only on the shapes); MIPT reads the n-token context in one parallel call
(``return_state=True``). ``ms_per_token`` is one eager ``step`` (waiting for the device after each);
for MIPT on CUDA the other ``--decode-modes`` of :class:`~minimipt.decoding.Decoder` (``graph``: the
step captured as a CUDA graph; ``compile``) are timed over 32 steps back to back (``<mode>_ms_per_token``).

``python -m minimipt.bench scaling [--lengths ...] [--out results/bench/scaling_<hw>.json]``
"""

from __future__ import annotations

import contextlib
import json
import time

import torch

from .common import VOCAB, lm_makers, median_ms, results_path, sync, time_decoder

__all__ = ["add_arguments", "run"]


def add_arguments(p) -> None:
    p.add_argument("--lengths", default=None, help="comma-separated training lengths")
    p.add_argument("--decode-lengths", default=None, help="comma-separated context lengths for decoding")
    p.add_argument("--decode-batch", type=int, default=1, help="batch size for decoding")
    p.add_argument("--decode-modes", default=None,
                   help="Decoder modes timed for MIPT besides one eager step (default graph on CUDA, none on a CPU)")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--models", default="mipt,mipt-K64,sdpa,naive,hgrn")
    p.add_argument("--out", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cuda-graphs", action="store_true",
                   help="also time each training step captured once as a CUDA graph and replayed (every model "
                        "alike): the step's GPU time without Python and launch overhead")


class _LogitsOnly(torch.nn.Module):
    """A Hugging Face causal LM as ``tokens (B, N) → logits (B, N, V)`` (no KV cache while training)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=x, use_cache=False).logits


def _hgrn(V: int, d: int, layers: int) -> torch.nn.Module:
    """flash-linear-attention's HGRN language model of the same width, depth and vocabulary (chunk mode)."""
    from fla.models import HGRNConfig, HGRNForCausalLM

    return _LogitsOnly(HGRNForCausalLM(HGRNConfig(hidden_size=d, num_hidden_layers=layers, vocab_size=V,
                                                  attn_mode="chunk", fuse_cross_entropy=False)))


def hgrn_missing() -> str | None:
    """Why the ``hgrn`` row cannot run here (None when flash-linear-attention imports)."""
    try:
        import fla.models  # noqa: F401
    except Exception as err:  # noqa: BLE001 - not installed, or a broken install: the row is skipped
        return (f"flash-linear-attention is not importable ({type(err).__name__}: {str(err)[:120]}); "
                f"pip install 'minimipt[bench]'")
    return None


def _models(names, d, layers, max_len):
    """:func:`~minimipt.bench.common.lm_makers`, plus ``hgrn``."""
    out = lm_makers([n for n in names if n != "hgrn"], d, layers, max_len)
    if "hgrn" in names:
        out["hgrn"] = lambda: _hgrn(VOCAB, d, layers)
    return {n: out[n] for n in names}


def _setup(make, B, N, device, capturable=False):
    """A fresh model and AdamW on ``B`` random windows of ``N + 1`` tokens; returns the optimizer and
    ``update()``: one forward, backward and optimizer step (bf16 autocast on CUDA). Gradients are
    set to None by the caller."""
    torch.manual_seed(0)
    model = make().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, capturable=capturable)
    x = torch.randint(0, VOCAB, (B, N + 1), device=device)

    def update():
        # a graph capture needs autocast's weight cache off (it would hold tensors from before capture)
        amp = (torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not capturable) if device.type == "cuda"
               else contextlib.nullcontext())
        with amp:
            logits = model(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()

    return opt, update


def _train_point(make, B, N, device, repeats):
    opt, update = _setup(make, B, N, device)

    def step():
        update()
        opt.zero_grad(set_to_none=True)

    try:
        step()  # warm-up (compilation, allocator)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        ms = median_ms(step, device, repeats)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
        return {"ms_per_step": round(ms, 3), "tokens_per_s": round(B * N / ms * 1e3),
                "peak_mb": peak and round(peak, 1), "params": sum(q.numel() for g in opt.param_groups for q in g["params"])}
    except torch.OutOfMemoryError:
        return {"oom": True}
    finally:
        if device.type == "cuda":  # the model and optimizer go out of scope with this call
            torch.cuda.empty_cache()


def _graph_point(make, B, N, device, repeats):
    """The same training step (forward, backward, AdamW) captured once as a CUDA graph and replayed.

    Small models spend most of an eager step in Python and kernel launches, the same for every model;
    a replayed graph measures what the GPU does. Capture follows PyTorch's whole-network recipe
    (warm-up on a side stream, gradients set to None before capture, ``capturable`` AdamW). A model
    whose step cannot be captured (e.g. a host synchronisation) gets ``graph_error`` instead.
    """
    opt, update = _setup(make, B, N, device, capturable=True)
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up: kernel self-checks, autotuning, optimizer state
                opt.zero_grad(set_to_none=True)
                update()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            update()
        graph.replay()
        sync(device)
        ms = median_ms(graph.replay, device, repeats)
        return {"graph_ms_per_step": round(ms, 3), "graph_tokens_per_s": round(B * N / ms * 1e3)}
    except torch.OutOfMemoryError:
        return {"graph_oom": True}
    except Exception as err:  # noqa: BLE001 - recorded in the results file, the benchmark goes on
        return {"graph_error": f"{type(err).__name__}: {err}"[:300]}
    finally:
        torch.cuda.empty_cache()


def _graph_series(name, d, layers, max_len, B, lengths, repeats, device) -> list[dict]:
    """:func:`_graph_point` for one model at every length, meant to run in its own process: a capture
    that fails can leave the CUDA generator in capture state, and the next random op of the process
    then raises ("Offset increment outside graph capture"). After a failure the remaining lengths
    are skipped, as the process is no longer trustworthy."""
    device = torch.device(device)
    make = _models([name], d, layers, max_len)[name]
    out = []
    for N in lengths:
        if out and ("graph_error" in out[-1] or out[-1].get("graph_skipped")):
            out.append({"graph_skipped": "after a failed capture at a shorter length"})
            continue
        out.append(_graph_point(make, B, N, device, repeats))
    return out


def _graph_points(names, args, lengths, max_len, device) -> dict[tuple[str, int], dict]:
    """Every model's graph timings, each model in a fresh spawned process (see :func:`_graph_series`)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = {}
    for name in names:
        with ctx.Pool(1) as pool:
            try:
                series = pool.apply(_graph_series, (name, args.d_model, args.layers, max_len, args.batch, lengths,
                                                    args.repeats, str(device)))
            except Exception as err:  # noqa: BLE001 - the worker died; recorded, the benchmark goes on
                series = [{"graph_error": f"worker: {type(err).__name__}: {err}"[:300]}] * len(lengths)
        for N, r in zip(lengths, series):
            out[(name, N)] = r
    return out


@torch.no_grad()
def _decode_point(make, name, n, device, repeats, B=1, modes=()):
    from ..state import KVCache, TransformerState

    torch.manual_seed(0)
    model = make().to(device).eval()
    tok = torch.randint(0, VOCAB, (B,), device=device)
    if name in ("sdpa", "naive"):  # a KV cache of n random entries, of the model's shape
        att = model.blocks[0].attn
        kv = lambda: torch.randn(B, att.n_heads, n, att.head_dim, device=device)
        state = TransformerState(layers=[KVCache(k=kv(), v=kv()) for _ in model.blocks])
    else:  # the n-token context read in parallel
        _, state = model(torch.randint(0, VOCAB, (B, n), device=device), return_state=True)
    nbytes = state.nbytes
    _, state2 = model.step(tok, state)  # warm-up
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ms = median_ms(lambda: model.step(tok, state), device, repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    out = {"ms_per_token": round(ms, 4), "state_mb": round(nbytes / 2**20, 4), "peak_mb": peak and round(peak, 1)}
    for mode in modes if name.startswith("mipt") else ():
        try:
            _, _, ms = time_decoder(model, state, mode, tok.expand(32, B), device, repeats)
            out[f"{mode}_ms_per_token"] = round(ms, 4)
        except Exception as err:  # noqa: BLE001 - recorded in the results file, the benchmark goes on
            out[f"{mode}_error"] = f"{type(err).__name__}: {err}"[:300]
    del model, state, state2
    return out


def _train_table(names, makers, args, lengths, device, max_len, on_row=None) -> list[dict]:
    """One training row per (length, model); a model that fails records its error and the others go on.
    ``on_row(rows)`` runs after each row (the caller writes the results so far)."""
    graphs = args.cuda_graphs and device.type == "cuda"
    if args.cuda_graphs and not graphs:
        print("--cuda-graphs needs a CUDA device: timing eager steps only")
    print(f"{'model':16s} {'N':>7s} {'ms/step':>9s} {'tokens/s':>11s} {'peak MB':>9s}"
          + (f" {'graph ms':>9s} {'graph tok/s':>12s}" if graphs else ""))
    graph_rows = _graph_points(names, args, lengths, max_len, device) if graphs else {}
    train = []
    for N in lengths:
        for name in names:
            try:
                r = {"model": name, "N": N, **_train_point(makers[name], args.batch, N, device, args.repeats)}
            except Exception as err:  # noqa: BLE001 - recorded in the results file, the benchmark goes on
                r = {"model": name, "N": N, "error": f"{type(err).__name__}: {err}"[:300]}
            if not (r.get("oom") or r.get("error")):
                r.update(graph_rows.get((name, N), {}))
            train.append(r)
            line = ("      OOM" if r.get("oom") else f"  error: {r['error']}" if r.get("error") else
                    f"{r['ms_per_step']:9.2f} {r['tokens_per_s']:11,d} {r['peak_mb'] or float('nan'):9.1f}")
            if "graph_ms_per_step" in r:
                line += f" {r['graph_ms_per_step']:9.2f} {r['graph_tokens_per_s']:12,d}"
            elif "graph_error" in r or "graph_oom" in r or "graph_skipped" in r:
                line += f" graph: {r.get('graph_error') or r.get('graph_skipped') or 'OOM'}"
            print(f"{name:16s} {N:7d} " + line, flush=True)
            if on_row is not None:
                on_row(train)
    return train


def _ratios(train: list[dict]) -> list[dict]:
    """At every length: each cached MIPT model against ``mipt`` (step time, peak memory, replayed-graph
    step), and each MIPT model's training tokens/s against HGRN's (where both ran)."""
    rows = {(r["model"], r["N"]): r for r in train if "ms_per_step" in r}
    out = []
    for (name, N), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base, peer = rows.get(("mipt", N)), rows.get(("hgrn", N))
        entry = {"model": name, "N": N}
        if name.startswith("mipt-K") and base:
            entry["step_vs_mipt"] = round(r["ms_per_step"] / base["ms_per_step"], 3)
            if r.get("peak_mb") and base.get("peak_mb"):
                entry["peak_vs_mipt"] = round(r["peak_mb"] / base["peak_mb"], 3)
            if r.get("graph_ms_per_step") and base.get("graph_ms_per_step"):
                entry["graph_step_vs_mipt"] = round(r["graph_ms_per_step"] / base["graph_ms_per_step"], 3)
        if name.startswith("mipt") and peer:
            entry["tokens_per_s_vs_hgrn"] = round(r["tokens_per_s"] / peer["tokens_per_s"], 3)
        if len(entry) > 2:
            out.append(entry)
    return out


def run(args) -> int:
    from ..env import get_device, smoke_mode
    from ..train.provenance import provenance

    device = get_device()
    small = smoke_mode() or device.type != "cuda"
    lengths = [int(x) for x in (args.lengths or ("64,128" if small else "512,2048,4096,8192,16384")).split(",")]
    dec = [int(x) for x in (args.decode_lengths or ("1,64,256" if small else "1,1024,4096,16384,65536")).split(",")]
    names = args.models.split(",")
    makers = _models(names, args.d_model, args.layers, max(dec + lengths) + 1)
    why = hgrn_missing() if "hgrn" in names else None
    skipped = {"hgrn": why} if why else {}
    t0 = time.time()
    out = results_path(args.out, "scaling", device)
    B = args.decode_batch
    modes = [m for m in (args.decode_modes or ("graph" if device.type == "cuda" else "")).split(",") if m]

    prov = provenance(device)  # git and versions: read once, not for every row

    def write(train: list[dict], decode: list[dict], partial: str | None) -> None:
        res = {"benchmark": "scaling", "config": {"d_model": args.d_model, "layers": args.layers, "batch": args.batch,
                                                  "vocab": VOCAB, "amp": "bf16" if device.type == "cuda" else None,
                                                  "models": names, "lengths": lengths, "decode_lengths": dec,
                                                  "decode_batch": B, "decode_modes": modes,
                                                  "cuda_graphs": args.cuda_graphs and device.type == "cuda"},
               "train": train, "ratios": _ratios(train), "decode": decode, "wall_time_s": round(time.time() - t0, 1),
               **({"partial": partial} if partial else {}), **prov}
        out.write_text(json.dumps(res, indent=1) + "\n")

    # the results so far are written after every row: a run cut short keeps what it measured
    print(f"training step, d_model {args.d_model}, {args.layers} layers, batch {args.batch}, device {device}")
    train = _train_table([n for n in names if n not in skipped], makers, args, lengths, device, max(dec + lengths) + 1,
                         on_row=lambda rows: write(rows, [], "the training part had not finished"))
    for name, why in skipped.items():
        print(f"{name}: skipped, {why}")
        train += [{"model": name, "N": N, "skipped": why} for N in lengths]
    for r in _ratios(train):
        print("  ".join(f"{k} {v}" for k, v in r.items()))
    write(train, [], "training only: the decoding part had not finished")
    decode = []
    print(f"\ndecoding one token after n tokens of context (batch {B}; eager step" + "".join(f", {m}" for m in modes)
          + ")")
    print(f"{'model':10s} {'n':>7s} {'ms/token':>9s} {'state MB':>9s} {'peak MB':>9s}" + "".join(f" {m:>9s}" for m in modes))
    for n in dec:
        # the peer is timed in training only; a forced batched cache path does not change decoding
        for name in (m for m in names if m != "hgrn" and not (m.startswith("mipt-K") and "-" in m[6:])):
            try:
                r = {"model": name, "n": n, "batch": B,
                     **_decode_point(makers[name], name, n, device, max(10, args.repeats), B, modes)}
            except torch.OutOfMemoryError:
                r = {"model": name, "n": n, "batch": B, "oom": True}
            decode.append(r)
            extra = "".join(f" {r[f'{m}_ms_per_token']:9.4f}" if f"{m}_ms_per_token" in r else f" {m}: error"
                            for m in modes if name.startswith("mipt") and not r.get("oom"))
            print(f"{name:10s} {n:7d} " + ("      OOM" if r.get("oom") else
                  f"{r['ms_per_token']:9.3f} {r['state_mb']:9.3f} {r['peak_mb'] or float('nan'):9.1f}" + extra), flush=True)
            write(train, decode, "the decoding part had not finished")
    write(train, decode, None)
    print(f"wrote {out}")
    return 0
