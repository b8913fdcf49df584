"""Exploration behind results/explore/model-saved-bytes-cpu.json (run from the repository root):
    TRITON_INTERPRET=1 python scripts/explore_model_saved_bytes.py [OUT]
What autograd keeps for backward in the scaling benchmark's models (d_model 128, 2 layers, vocabulary
256) under CPU bf16 autocast, by the autograd node that keeps it: MIPT through the Triton kernel (run by
Triton's CPU interpreter, as on the GPU), the SDPA Transformer, and the naive one. Storages are counted
once. Saved bytes are not the peak (the backward's transients come on top), but they are its largest
part, and they show where the two models differ per token. Needs Triton (pip install triton)."""
import collections, json, sys, time, torch
from minimipt import MIPTLM, TransformerLM
from minimipt.ops import resolve_method
from minimipt.train.provenance import provenance
t0 = time.time()
B, d, layers, V = 1, 128, 2, 256
LENGTHS = (128, 256)  # per-token bytes = the slope between the two (bf16 weight copies are constant)
# the GPU's path, run by the interpreter: under TRITON_INTERPRET=1 "auto" picks "triton" on the CPU
assert resolve_method("auto", torch.device("cpu")) == "triton", "run with TRITON_INTERPRET=1 (and Triton installed)"
def census(model, L):
    torch.manual_seed(0)
    x = torch.randint(0, V, (B, L + 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
    seen, by_node, todo, visited = {}, collections.Counter(), [loss.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        tensors = [getattr(node, a) for a in dir(node) if a.startswith("_saved_")]
        try:
            tensors += list(getattr(node, "saved_tensors", ()))   # custom autograd Functions
        except RuntimeError:
            pass
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                nbytes = t.untyped_storage().nbytes()
                seen[t.untyped_storage().data_ptr()] = nbytes
                by_node[type(node).__name__] += nbytes
        todo += [n for n, _ in node.next_functions]
    params = sum(p.untyped_storage().nbytes() for p in model.parameters())
    total = sum(seen.values())  # includes the parameters some nodes keep (weights): reported apart
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return total - sum(v for k, v in seen.items() if k in param_ptrs), by_node
def per_token(make):
    (t0_, n0), (t1_, n1) = (census(make(), L) for L in LENGTHS)
    dl = B * (LENGTHS[1] - LENGTHS[0])
    return {"saved_bytes_per_token": round((t1_ - t0_) / dl, 1),
            "by_node_bytes_per_token": {k: round((n1[k] - n0[k]) / dl, 1) for k, _ in n1.most_common()
                                        if n1[k] != n0[k]}}
models = {"mipt": lambda: MIPTLM(V, d, layers, cache_slots=0),
          "sdpa": lambda: TransformerLM(V, d, layers, n_heads=4, attention="sdpa", max_len=max(LENGTHS) + 1),
          "naive": lambda: TransformerLM(V, d, layers, n_heads=4, attention="naive", max_len=max(LENGTHS) + 1)}
res = {"benchmark": "model-saved-bytes",
       "what": "bytes autograd keeps for backward per token (the slope between two lengths: parameters and "
               "their bf16 copies excluded), by autograd node, for the "
               "scaling benchmark's models under CPU bf16 autocast; MIPT through the Triton kernel run by "
               "Triton's CPU interpreter; storages counted once (a storage is charged to the first node seen)",
       "config": {"B": B, "lengths": LENGTHS, "d_model": d, "layers": layers, "vocab": V, "autocast": "cpu bf16"},
       "metrics": {name: per_token(make) for name, make in models.items()},
       "wall_time_s": None}
res["wall_time_s"] = round(time.time() - t0, 2)
res.update(provenance(torch.device("cpu")))
open(sys.argv[1] if len(sys.argv) > 1 else "results/explore/model-saved-bytes-cpu.json", "w").write(json.dumps(res, indent=1) + "\n")
print(json.dumps(res["metrics"], indent=1))
