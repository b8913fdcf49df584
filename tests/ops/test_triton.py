"""minimipt.ops.triton, the package: importing minimipt never imports Triton; without a GPU "auto"
falls back to "chunked"; a device where a kernel fails its first-use self-check keeps the PyTorch path.
The kernels: triton/test_scan.py, triton/test_mixer.py, triton/test_cache_attention.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import minimipt
from minimipt import MIPTLayer
from minimipt.ops import resolve_method, scan_chunked
from tests._support import DEV, float32_problem, interpreting, needs_gpu


def test_import_does_not_import_triton():
    code = "import sys, minimipt; assert 'triton' not in sys.modules, 'triton imported'; " \
           "assert 'triton' in minimipt.scan_methods(); print('ok')"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.skipif(interpreting(), reason="under the interpreter the CPU runs method 'triton'")
def test_cpu_auto_falls_back_to_chunked_and_method_matches():
    assert resolve_method("auto", torch.device("cpu")) == "chunked"
    from minimipt.ops.triton import scan_triton_or_chunked, triton_available

    assert not triton_available(torch.device("cpu"))
    p, theta, u, h0, _ = float32_problem(2, 33, 5, "mixed", 0)
    h = scan_triton_or_chunked(p, theta, u, h0)  # CPU: runs "chunked"
    assert torch.allclose(h, scan_chunked(p, theta, u, h0))
    with pytest.raises(ValueError, match="not available"):
        minimipt.mipt_scan(p, theta, u, h0, method="triton")


@pytest.mark.gpu
@needs_gpu
def test_auto_picks_triton_on_cuda():
    assert resolve_method("auto", DEV) == "triton"


def test_mixer_self_check_failure_keeps_the_split_path(monkeypatch):
    """A device where the fused mixer fails its self-check (here: the CPU without the interpreter,
    where mixer_triton refuses to run) warns once and the layer keeps its split path."""
    import minimipt.ops.triton as K

    monkeypatch.setattr(K, "triton_available", lambda dev: True)
    monkeypatch.setattr(K, "_MIXER_CHECKED", {})
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.warns(RuntimeWarning, match="fused mixer is disabled on cpu"):
        assert not K.mixer_available(torch.device("cpu"))
    assert not K.mixer_available(torch.device("cpu"))  # cached: no second check, no second warning
    ok, message = K.mixer_self_check(torch.device("cpu"))
    assert not ok and message
    layer = MIPTLayer(8, fused_mixer=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(2, 5, 8))
    assert "TritonMixer" not in type(y.grad_fn).__name__
