"""Exploration behind results/explore/narrow-layer-saved-bytes-cpu.json (run from the repository root):
    TRITON_INTERPRET=1 python scripts/explore_narrow_layer_bytes.py [OUT]
Needs Triton installed (pip install triton); its CPU interpreter runs the kernel (scan_method="triton")."""
import json, sys, time, torch
from minimipt import MIPTLayer
from minimipt.ops.triton import triton_available
from minimipt.train.provenance import provenance
t0 = time.time()
torch.manual_seed(0)
B, L, d = 2, 64, 32
x = torch.randn(B, L, d)
ref = MIPTLayer(d).state_dict()
assert triton_available(torch.device("cpu")), "run with TRITON_INTERPRET=1 (and Triton installed)"
def run(method):
    layer = MIPTLayer(d, scan_method=method); layer.load_state_dict(ref)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
    nb = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}.values())
    y.float().square().mean().backward()
    return y.float().detach(), {n: q.grad for n, q in layer.named_parameters()}, nb
yn, gn, bn = run("triton"); yw, gw, bw = run("chunked")
res = {"benchmark": "narrow-layer-saved-bytes",
       "what": "bytes autograd keeps for backward in one MIPTLayer forward under CPU bf16 autocast: the Triton "
               "method (run by Triton's CPU interpreter, TRITON_INTERPRET=1) reading θ and u as bf16 pairs, vs "
               "method 'chunked' (pairs widened to complex64 by mipt_scan); storages counted once",
       "config": {"B": B, "L": L, "d_model": d, "autocast": "cpu bf16", "seed": 0},
       "metrics": {"saved_bytes_triton_pairs": bn, "saved_bytes_chunked": bw,
                   "output_rel_diff": float((yn - yw).norm() / yw.norm()),
                   "grad_rel_diff": {k: float((gn[k] - gw[k]).norm() / gw[k].norm()) for k in gw}},
       "wall_time_s": round(time.time() - t0, 2), **provenance(torch.device("cpu"))}
open(sys.argv[1] if len(sys.argv) > 1 else "results/explore/narrow-layer-saved-bytes-cpu.json", "w").write(json.dumps(res, indent=1) + "\n")
print(res["metrics"])
