"""Time to first token and decoding speed of MIPT language models: parallel prefill against token by token.

Time to first token (TTFT) for a prompt of n tokens, batch 1: the *parallel* path reads the prompt in
one call (``model(prompt, return_state=True)``, what ``generate`` does), the *token-by-token* path
feeds it through ``step`` one token at a time (eager, as a plain loop over ``step`` would; on CUDA also through
the captured step of :class:`~minimipt.decoding.Decoder`, capture included). Both then pick the first
new token (argmax); the file records whether they agree and the largest difference of their logits.

Decoding: milliseconds per step and tokens per second of ``Decoder.step`` after a 256-token prompt,
at batch 1 and 64, for each decoding mode (``eager``; on CUDA ``graph`` and ``compile``), timed over
``--decode-tokens`` steps back to back after a warm-up (compilation and capture excluded, reported
as ``setup_s``).

Models: ``MIPTLM`` of ``--d-model`` width, ``--layers`` layers and a 256-token vocabulary, without a
cache (``mipt``) and with K slots (``mipt-K<k>``). The token-by-token path takes one run per length
(it is long); the parallel path the median of ``--repeats`` after a warm-up at that length.

``python -m minimipt.bench generate [--prompts 256,1024,4096,16384] [--out results/bench/generate_<hw>.json]``
"""

from __future__ import annotations

import json
import time

import torch

from .common import VOCAB, lm_makers, median_ms, results_path, time_decoder, timed

__all__ = ["add_arguments", "run"]


def add_arguments(p) -> None:
    p.add_argument("--prompts", default=None, help="comma-separated prompt lengths (default 256,1024,4096,16384)")
    p.add_argument("--models", default="mipt,mipt-K64", help="mipt and/or mipt-K<k>, comma-separated")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--decode-modes", default=None,
                   help="comma-separated Decoder modes to time (default eager,graph,compile on CUDA, eager on a CPU)")
    p.add_argument("--decode-batches", default="1,64", help="comma-separated batch sizes for decoding")
    p.add_argument("--decode-tokens", type=int, default=64, help="steps per timed decoding run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for both paths (torch.set_num_threads); on a shared machine 1 avoids "
                        "OpenMP threads waiting on each other, which slows the many small steps most")
    p.add_argument("--out", default=None)


def _make(name: str, d: int, layers: int):
    if not name.startswith("mipt"):
        raise ValueError(f"unknown model {name!r}; use mipt or mipt-K<k> (e.g. mipt-K64): the benchmark decodes "
                         "through minimipt.decoding.Decoder, which steps MIPT language models")
    return lm_makers([name], d, layers, max_len=0)[name]()


@torch.no_grad()
def _ttft(model, n: int, device, repeats: int, modes: list[str]) -> dict:
    from ..decoding import Decoder

    prompt = torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(n)).to(device)

    def parallel():
        logits, _ = model(prompt, return_state=True)
        return logits[:, -1]

    def by_step(mode):
        def go():
            dec = Decoder(model, model.init_state(1), mode=mode)
            for t in range(n):
                logits = dec.step(prompt[:, t])
            return logits.clone()
        return go

    last = parallel()  # warm-up at this length (kernels tuned per shape, allocator)
    ms_par = median_ms(parallel, device, repeats)
    row = {"n": n, "parallel_ms": round(ms_par, 3)}
    for mode in modes:
        try:
            sec, logits = timed(by_step(mode), device)
        except Exception as err:  # noqa: BLE001 - recorded in the results file, the benchmark goes on
            row[f"step_{mode}_error"] = f"{type(err).__name__}: {err}"[:300]
            continue
        row[f"step_{mode}_ms"] = round(sec * 1e3, 3)
        row[f"speedup_vs_{mode}"] = round(sec * 1e3 / ms_par, 2)
        row[f"same_first_token_{mode}"] = bool(torch.equal(logits.argmax(-1), last.argmax(-1)))
        row[f"max_logit_diff_{mode}"] = float((logits.float() - last.float()).abs().max())
    return row


@torch.no_grad()
def _decode(model, B: int, mode: str, device, tokens: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(B)
    prompt = torch.randint(0, VOCAB, (B, 256), generator=g).to(device)
    feed = torch.randint(0, VOCAB, (tokens, B), generator=g).to(device)
    _, state = model(prompt, return_state=True)
    dec, setup_s, ms = time_decoder(model, state, mode, feed, device, repeats)
    return {"ms_per_token": round(ms, 4), "tokens_per_s": round(B * 1e3 / ms), "setup_s": round(setup_s, 2),
            "decode_mode": dec.mode}


def run(args) -> int:
    from ..env import get_device, smoke_mode
    from ..train.provenance import provenance

    device = get_device()
    cuda = device.type == "cuda"
    smoke = smoke_mode()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    prompts = [int(x) for x in (args.prompts or ("16,64" if smoke else "256,1024,4096,16384")).split(",")]
    modes = (args.decode_modes or ("eager,graph,compile" if cuda else "eager")).split(",")
    batches = [int(x) for x in ("1,4" if smoke and args.decode_batches == "1,64" else args.decode_batches).split(",")]
    tokens = min(args.decode_tokens, 8) if smoke else args.decode_tokens
    names = args.models.split(",")
    step_modes = ["eager", "graph"] if cuda else ["eager"]
    t0 = time.time()
    ttft, decode = [], []
    print(f"time to first token, batch 1, d_model {args.d_model}, {args.layers} layers, V {VOCAB}, device {device}")
    for name in names:
        torch.manual_seed(0)
        model = _make(name, args.d_model, args.layers).to(device).eval()
        for n in prompts:
            r = {"model": name, **_ttft(model, n, device, args.repeats, step_modes)}
            ttft.append(r)
            parts = [f"{m}: {r[f'step_{m}_ms']:10.1f} ms ({r[f'speedup_vs_{m}']:6.1f}x)" if f"step_{m}_ms" in r
                     else f"{m}: {r[f'step_{m}_error']}" for m in step_modes]
            print(f"{name:9s} n={n:6d}  parallel {r['parallel_ms']:9.2f} ms   token by token " + "   ".join(parts),
                  flush=True)
        for B in batches:
            for mode in modes:
                try:
                    r = {"model": name, "batch": B, "mode": mode, **_decode(model, B, mode, device, tokens, args.repeats)}
                except Exception as err:  # noqa: BLE001 - recorded, the benchmark goes on
                    r = {"model": name, "batch": B, "mode": mode, "error": f"{type(err).__name__}: {err}"[:300]}
                decode.append(r)
                print(f"{name:9s} decode B={B:3d} {mode:8s} " + (r["error"] if "error" in r else
                      f"{r['ms_per_token']:8.4f} ms/token {r['tokens_per_s']:10,d} tokens/s (setup {r['setup_s']} s)"),
                      flush=True)
        del model
        if cuda:
            torch.cuda.empty_cache()
    out = results_path(args.out, "generate", device)
    res = {"benchmark": "generate",
           "config": {"d_model": args.d_model, "layers": args.layers, "vocab": VOCAB, "models": names,
                      "prompts": prompts, "ttft_batch": 1, "ttft_step_modes": step_modes, "decode_modes": modes,
                      "decode_batches": batches, "decode_tokens": tokens, "decode_prompt": 256,
                      "repeats": args.repeats, "smoke": smoke, "dtype": "float32",
                      "threads": torch.get_num_threads() if not cuda else None},
           "ttft": ttft, "decode": decode, "wall_time_s": round(time.time() - t0, 1), **provenance(device)}
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return 0
