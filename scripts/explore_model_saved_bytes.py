"""Exploration behind results/explore/model-saved-bytes-cpu.json (run from the repository root):
    TRITON_INTERPRET=1 python scripts/explore_model_saved_bytes.py [OUT]
What autograd keeps for backward in the scaling benchmark's models (d_model 128, 2 layers, vocabulary
256) under CPU bf16 autocast, per token and by the module that keeps it: MIPT without a cache and with
a K = 64 cache, both on the GPU's paths (the Triton scan and the fused cache kernels, run by Triton's
CPU interpreter), and the SDPA Transformer (the naive Transformer keeps O(L²): no per-token number).

How: a saved-tensor hook records every tensor autograd packs (custom Functions included) with the
module running at that moment. A checkpoint region's inside is packed by the checkpoint's own hooks
(not kept); its inputs are kept (torch saves them through the outer hooks; to count them whatever the
torch version, ``torch.utils.checkpoint.checkpoint`` is also wrapped before minimipt is imported).
Storages are counted once, parameters never; per-token bytes are the slope between two lengths (bf16
weight copies are constant). Saved bytes are not the peak (the backward's transients come on top),
but they are its largest part, and they show where the models differ per token.

Where the CPU differs from CUDA (the GPU's numbers are these minus ``cpu_only``):
* ``log_sigmoid_forward`` returns a (B, L, D) buffer that its backward keeps on the CPU only (empty on
  CUDA): found with a dispatch mode and reported as ``cpu_only``;
* autocast: the ops on these models' training paths fall in the same class on both devices (linear in
  bf16; layer_norm, logsumexp and the loss in float32; sigmoid, GELU and products in their inputs'
  dtype); ``exp`` differs (bf16 on the CPU, float32 on CUDA) but is not on these paths;
* the fused cache kernels run on the CPU only under the interpreter and only when asked for
  (``fused_usable`` needs CUDA): the K = 64 model replaces it by the kernels' own support test.
  The interpreter's ``tl.dot`` misreads bf16, so the values are wrong here (bytes are what is
  counted; the tests check the values in float32). Needs Triton (pip install triton)."""
import collections, json, sys, time
import torch
import torch.utils.checkpoint
from torch.utils._python_dispatch import TorchDispatchMode

_checkpoint = torch.utils.checkpoint.checkpoint
STACK = ["(outside modules)"]  # the modules running now (names), innermost last
KEPT_BY_CHECKPOINT: list = []  # (tensor, module) for the inputs of every checkpoint region since the last reset


def counted_checkpoint(fn, *args, **kwargs):
    KEPT_BY_CHECKPOINT.extend((a, STACK[-1] + " (checkpoint inputs)") for a in args if isinstance(a, torch.Tensor))
    return _checkpoint(fn, *args, **kwargs)


torch.utils.checkpoint.checkpoint = counted_checkpoint  # before minimipt binds the name

import minimipt.ops.cache_attention as cache_ops  # noqa: E402
from minimipt import MIPTLM, TransformerLM  # noqa: E402
from minimipt.ops import resolve_method  # noqa: E402
from minimipt.ops.triton.cache_attention import fused_supports  # noqa: E402
from minimipt.train.provenance import provenance  # noqa: E402

t0 = time.time()
B, d, layers, V, K = 1, 128, 2, 256, 64
LENGTHS = (384, 768)  # per-token bytes = the slope between the two (several cache blocks of 64)
# the GPU's paths, run by the interpreter: under TRITON_INTERPRET=1 "auto" picks "triton" on the CPU
assert resolve_method("auto", torch.device("cpu")) == "triton", "run with TRITON_INTERPRET=1 (and Triton installed)"
cache_ops.fused_usable = lambda device, dtype, length, slots: fused_supports(dtype, length, slots)


class CpuOnlyBuffers(TorchDispatchMode):
    """Holds ``log_sigmoid_forward``'s buffers (kept for backward on the CPU only, when its backward
    is autograd's): held, so that no later tensor can take a freed buffer's address."""

    def __init__(self):
        super().__init__()
        self.buffers = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.log_sigmoid_forward.default:
            self.buffers.append(out[1])
        return out


def census(model, L):
    """``{(module, dtype, shape): bytes}`` kept for backward by one loss, and the CPU-only part."""
    names = {id(m): n or "(model)" for n, m in model.named_modules()}
    stack, kept, where = STACK, {}, {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def note(t, label):
        s = t.untyped_storage()
        if s.data_ptr() in params or s.data_ptr() in kept:
            return
        kept[s.data_ptr()] = s.nbytes()
        where[s.data_ptr()] = (label, str(t.dtype).replace("torch.", ""), tuple(t.shape))

    def pack(t):
        note(t, stack[-1])
        return t

    def pre(m, args):
        stack.append(names.get(id(m), stack[-1]))

    def post(m, args, out):
        stack.pop()

    h1 = torch.nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = torch.nn.modules.module.register_module_forward_hook(post)
    torch.manual_seed(0)
    x = torch.randint(0, V, (B, L + 1))
    KEPT_BY_CHECKPOINT.clear()
    try:
        with CpuOnlyBuffers() as mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x[:, :-1])
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
    finally:
        h1.remove(), h2.remove()
    for t, label in KEPT_BY_CHECKPOINT:
        note(t, label)
    by = collections.Counter()
    for ptr, nbytes in kept.items():
        by[where[ptr]] += nbytes
    buffers = {t.untyped_storage().data_ptr() for t in mode.buffers}
    cpu_only = sum(n for p, n in kept.items() if p in buffers)
    del loss
    return by, cpu_only


def generic(label):
    """``blocks.1.cache.qkv`` → ``cache.qkv``, ``blocks.1`` → ``(block)`` (layers are summed)."""
    parts = label.split(".", 2)
    if parts[0] in ("blocks", "layers") and len(parts) > 1 and parts[1].split(" ")[0].isdigit():
        return parts[2] if len(parts) > 2 else "(block)" + parts[1][len(parts[1].split(" ")[0]):]
    return label


def per_token(make):
    """Slopes by module and by (module, dtype); the tensors themselves (shapes) at the longer length."""
    (n0, c0), (n1, c1) = (census(make(), L) for L in LENGTHS)
    dl = B * (LENGTHS[1] - LENGTHS[0])
    modules, kinds = collections.Counter(), collections.Counter()
    for n, sign in ((n1, 1), (n0, -1)):
        for (label, dtype, shape), b in n.items():
            modules[generic(label)] += sign * b / dl
            kinds[f"{generic(label)} {dtype}"] += sign * b / dl
    total, cpu_only = sum(modules.values()), (c1 - c0) / dl
    shapes = collections.Counter()
    for (label, dtype, shape), b in n1.items():
        shapes[f"{label} {dtype}({', '.join(map(str, shape))})"] += b
    return {"saved_bytes_per_token": round(total - cpu_only, 1),
            "cpu_only_bytes_per_token": round(cpu_only, 1),
            "by_module_bytes_per_token": {k: round(v, 1) for k, v in modules.most_common() if round(v, 1)},
            "by_module_dtype_bytes_per_token": {k: round(v, 1) for k, v in kinds.most_common() if round(v, 1)},
            f"tensors_at_L{LENGTHS[1]}_bytes": dict(shapes.most_common())}


models = {"mipt": lambda: MIPTLM(V, d, layers, cache_slots=0),
          f"mipt-K{K}-fused": lambda: MIPTLM(V, d, layers, cache_slots=K, cache_method="fused"),
          "sdpa": lambda: TransformerLM(V, d, layers, n_heads=4, attention="sdpa", max_len=max(LENGTHS) + 1)}
metrics = {name: per_token(make) for name, make in models.items()}
base = metrics["mipt"]["saved_bytes_per_token"]
for m in metrics.values():
    m["ratio_to_mipt"] = round(m["saved_bytes_per_token"] / base, 3)
res = {"benchmark": "model-saved-bytes",
       "what": "bytes autograd keeps for backward per token (the slope between two lengths: parameters and their "
               "bf16 copies excluded) as CUDA would keep them (the CPU-only log_sigmoid buffer subtracted, shown "
               "apart), by module (layers summed) and by module and dtype, and the tensors (shapes) at the longer "
               "length, for the scaling "
               "benchmark's models under CPU bf16 autocast; MIPT through the Triton scan and (K = 64) the fused "
               "cache kernels, run by Triton's CPU interpreter; checkpoint regions' inputs counted; storages "
               "counted once (charged to the first module that keeps them)",
       "config": {"B": B, "lengths": LENGTHS, "d_model": d, "layers": layers, "vocab": V, "cache_slots": K,
                  "autocast": "cpu bf16", "seed": 0},
       "metrics": metrics, "wall_time_s": round(time.time() - t0, 2), **provenance(torch.device("cpu"))}
open(sys.argv[1] if len(sys.argv) > 1 else "results/explore/model-saved-bytes-cpu.json", "w").write(
    json.dumps(res, indent=1) + "\n")
print(json.dumps({k: (m["saved_bytes_per_token"], m["ratio_to_mipt"]) for k, m in metrics.items()}, indent=1))
