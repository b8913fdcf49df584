"""Instruction counts of the Triton kernels that ``scan_triton`` and ``mixer_triton`` launch with their
default configurations, compiled for an H100/H200 (sm_90) on a machine without a GPU.

    python scripts/explore_kernel_isa.py [--out FILE] [--before FILE]

Every launch goes through the package's own code (``scan_triton``, ``mixer_triton``, forward and backward
through autograd, on CPU tensors of a benchmark-like shape); the Triton launch is replaced by a recorder,
so the kernels, their arguments, constexprs, ``num_warps`` and Triton's argument specialisation (16-byte
alignment, divisibility by 16) are exactly those of a real launch. Each distinct launch is then compiled
with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` and its TTIR operations, PTX
instructions and SASS instructions (``nvdisasm``, bundled with Triton) are counted per mnemonic.

``--before FILE`` (this script's output for another commit) adds, per case, whether every count is equal:
the check that a refactoring left the compiled kernels unchanged. Needs Triton (no GPU, no network).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import triton
import triton.runtime.jit as triton_jit
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend

TARGET = GPUTarget("cuda", 90, 32)
B, L, D = 2, 8192, 512  # L, D, and so every tile count, divisible by 16 as at the benchmark shape

_RECORDED: list[dict] = []
_CASE = [""]


def _record(self, *args, grid, warmup, **kwargs):
    """Stands in for ``JITFunction.run``: bind and specialise the arguments as Triton does for a launch
    (without a driver), and record the launch instead of running it."""
    kwargs.setdefault("debug", False)
    backend = make_backend(TARGET)
    binder = triton_jit.create_function_from_signature(self.signature, self.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound, specialization, options)
    _RECORDED.append({"case": _CASE[0], "fn": self, "signature": signature, "constexprs": constexprs,
                      "attrs": attrs, "options": options})


def _mnemonics(text: str, kind: str) -> dict[str, int]:
    """Instruction mnemonics counted in TTIR (operation names), PTX or SASS text."""
    counts: collections.Counter = collections.Counter()
    for line in text.splitlines():
        line = line.split("//")[0].strip()
        if kind == "ttir":
            m = re.search(r"(?:^|=\s*)\"?([a-z_]+\.[a-z_.0-9]+)\"?[\s(<{]", line + " ")
        elif kind == "ptx":
            m = re.match(r"(?:@!?%p\d+\s+)?([a-z][a-z0-9_.]*)[\s;]", line + " ")
        else:  # sass: "/*0040*/  @!P0 LDG.E.128 R4, desc[UR6][R2.64] ;"
            m = re.match(r"/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if m:
            counts[m.group(1)] += 1
    return dict(sorted(counts.items()))


def _sass(cubin: bytes) -> str:
    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(nvdisasm), "-c", f.name], capture_output=True, text=True, check=True).stdout


def _drive() -> None:
    """Call the package's entry points as training does, one case per dtype layout, h0 or not, and with
    and without gradients (the forward writes checkpoints only when a backward will read them)."""
    from minimipt.ops.triton.mixer import mixer_triton
    from minimipt.ops.triton.scan import scan_triton

    os.environ["TRITON_INTERPRET"] = "1"  # read at call time by the device check; the kernels are compiled
    gen = torch.Generator().manual_seed(0)
    for name, pdt, tdt, udt in (("float32", torch.float32, torch.float32, torch.complex64),
                                ("bf16", torch.bfloat16, torch.bfloat16, torch.bfloat16),
                                ("layer", torch.float32, torch.bfloat16, torch.bfloat16)):
        p = torch.rand(B, L, D, generator=gen).to(pdt)
        theta = torch.rand(B, L, D, generator=gen).to(tdt)
        u = torch.randn(B, L, D, generator=gen, dtype=torch.complex64)
        u = u if udt.is_complex else torch.view_as_real(u).to(udt)
        for with_h0 in (True, False):
            h0 = torch.randn(B, D, generator=gen, dtype=torch.complex64) if with_h0 else None
            _CASE[0] = f"scan {name}{', h0' if with_h0 else ''}, no grad"
            with torch.no_grad():
                scan_triton(p, theta, u, h0)
            _CASE[0] = f"scan {name}{', h0' if with_h0 else ''}, forward+backward"
            leaves = [t.clone().requires_grad_() for t in (p, theta, u)] + ([h0.clone().requires_grad_()] if with_h0 else [])
            h = scan_triton(*leaves[:3], leaves[3] if with_h0 else None)
            torch.autograd.grad(h, leaves, torch.ones_like(h))
    for dtype in (torch.float32, torch.bfloat16):
        proj = torch.randn(B, L, 4 * D, generator=gen).to(dtype)
        for with_h0 in (True, False):
            h0 = torch.randn(B, D, generator=gen, dtype=torch.complex64) if with_h0 else None
            tag = f"mixer {str(dtype).removeprefix('torch.')}{', h0' if with_h0 else ''}"
            _CASE[0] = tag + ", no grad"
            with torch.no_grad():
                mixer_triton(proj, h0)
            _CASE[0] = tag + ", forward+backward"
            leaves = [proj.clone().requires_grad_()] + ([h0.clone().requires_grad_()] if with_h0 else [])
            y = mixer_triton(leaves[0], leaves[1] if with_h0 else None)
            torch.autograd.grad(y, leaves, torch.ones_like(y))


def _compile_all() -> list[dict]:
    out, seen = [], {}
    for rec in _RECORDED:
        name = rec["fn"].fn.__name__
        key = (name, json.dumps(rec["signature"], sort_keys=True), repr(sorted(rec["constexprs"].items())),
               repr(sorted(rec["attrs"].items())), rec["options"].num_warps)
        if key not in seen:
            t0 = time.time()
            kernel = triton.compile(ASTSource(rec["fn"], rec["signature"], rec["constexprs"], rec["attrs"]),
                                    target=TARGET, options=rec["options"].__dict__)
            seen[key] = {"ttir": _mnemonics(kernel.asm["ttir"], "ttir"), "ptx": _mnemonics(kernel.asm["ptx"], "ptx"),
                         "sass": _mnemonics(_sass(kernel.asm["cubin"]), "sass"),
                         "shared_bytes": kernel.metadata.shared, "compile_s": round(time.time() - t0, 1)}
            print(f"compiled {name} for {rec['case']} in {seen[key]['compile_s']} s", flush=True)
        names = [p.name for p in rec["fn"].params]
        constexprs = {names[k[0]]: v for k, v in rec["constexprs"].items() if isinstance(v, (bool, int))}
        counts = {kind: seen[key][kind] for kind in ("ttir", "ptx", "sass")}
        out.append({"case": rec["case"], "kernel": name, "num_warps": rec["options"].num_warps,
                    "pointers": {k: v for k, v in rec["signature"].items() if v.startswith("*")},
                    "constexprs": constexprs, "shared_bytes": seen[key]["shared_bytes"],
                    "totals": {kind: sum(c.values()) for kind, c in counts.items()},
                    "sha256": {kind: hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]
                               for kind, c in counts.items()}, **counts})
    return out


def _compare(before: dict, after: list[dict]) -> list[dict]:
    """Per launch (matched by case and order within it): are the TTIR, PTX and SASS counts equal?"""
    old = collections.defaultdict(list)
    for k in before["kernels"]:
        old[k["case"]].append(k)
    seen = collections.Counter()
    rows = []
    for k in after:
        i = seen[k["case"]]
        seen[k["case"]] += 1
        b = old[k["case"]][i] if i < len(old[k["case"]]) else None
        row = {"case": k["case"], "kernel": k["kernel"], "kernel_before": b and b["kernel"]}
        for kind in ("ttir", "ptx", "sass"):
            row[f"{kind}_total"] = k["totals"][kind]
            row[f"{kind}_equal"] = b is not None and b["sha256"][kind] == k["sha256"][kind]
        rows.append(row)
    return rows


def _dumps(result: dict) -> str:
    """JSON with one line per entry of the long lists (kernels, before, comparison)."""
    lines = ["{"]
    for i, (key, value) in enumerate(result.items()):
        end = "," if i < len(result) - 1 else ""
        items = value["kernels"] if key == "before" else value
        if key in ("kernels", "comparison", "before"):
            body = ",\n  ".join(json.dumps(x, ensure_ascii=False) for x in items)
            if key == "before":
                head = json.dumps({k: v for k, v in value.items() if k != "kernels"}, ensure_ascii=False)[:-1]
                lines.append(f' "{key}": {head}, "kernels": [\n  {body}\n ]}}{end}')
            else:
                lines.append(f' "{key}": [\n  {body}\n ]{end}')
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{end}")
    return "\n".join(lines) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench/scan_isa_sm90.json")
    parser.add_argument("--before", default=None, help="this script's output for the commit to compare with")
    args = parser.parse_args(argv)
    t0 = time.time()
    from minimipt.train.provenance import provenance

    triton_jit.JITFunction.run = _record
    _drive()
    kernels = _compile_all()
    result = {"benchmark": "scan-isa",
              "what": "TTIR operations, PTX and SASS instructions per mnemonic of every kernel launch that "
                      "scan_triton and mixer_triton make with their default configurations, compiled for "
                      "GPUTarget('cuda', 90, 32) on the CPU (no GPU); launches recorded from the package's own "
                      "calls with Triton's argument specialisation",
              "config": {"B": B, "L": L, "D": D, "target": "cuda sm_90, warp 32"},
              "triton": triton.__version__, **provenance(torch.device("cpu")), "kernels": kernels}
    if args.before:
        before = json.loads(Path(args.before).read_text())
        result["before"] = {"git_commit": before.get("git_commit"), "triton": before.get("triton"),
                            "kernels": [{k: b[k] for k in ("case", "kernel", "constexprs", "totals", "sha256")}
                                        for b in before["kernels"]]}
        result["comparison"] = _compare(before, kernels)
        same = all(r[f"{k}_equal"] for r in result["comparison"] for k in ("ttir", "ptx", "sass"))
        result["identical_counts"] = same and len(before["kernels"]) == len(kernels)
        for r in result["comparison"]:
            print(f"{r['case']:<40} {r['kernel']:<22} ttir {r['ttir_total']:>5} {r['ttir_equal']!s:<5} "
                  f"ptx {r['ptx_total']:>5} {r['ptx_equal']!s:<5} sass {r['sass_total']:>5} {r['sass_equal']}")
        print("identical counts:", result["identical_counts"])
    result["wall_time_s"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(_dumps(result))
    print(f"wrote {args.out} ({len(kernels)} launches, {result['wall_time_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
