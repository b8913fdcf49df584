"""Fast GPU kernels, registered as :func:`minimipt.mipt_scan` methods.

Reading order: this file (availability and the first-use self-checks), :mod:`.scan` (the recurrence's
equations, launch configurations, launches and autograd), its kernels :mod:`._tl_scan` and the device
functions they share with the mixer :mod:`._tl`, then the layer's fused mixer :mod:`.mixer` and its
kernels :mod:`._tl_mixer`. The design, the bytes and the measurements: ``docs/kernels.md``.

Importing this package is cheap and never imports Triton. :mod:`minimipt.ops.scan` registers the
method ``"triton"`` with a higher priority than ``"chunked"``. The method is *available* on a device
only when

1. the device is a CUDA device (or the CPU while Triton's interpreter is on, ``TRITON_INTERPRET=1``:
   how the tests and the explorations run the kernels without a GPU),
2. ``import triton`` works, and
3. a first-use self-check on that device passes: the kernels compile, run, and their values and
   gradients on a small random problem (p near 0, near 1 and mixed; a length that is not a
   multiple of the block) match the ``"sequential"`` reference in float64.

The result is cached per device. If any step fails, ``"auto"`` silently uses ``"chunked"`` instead
(a warning says why once); nothing raises on a machine without Triton or without a GPU. Inputs the
kernel does not handle (complex128 ``u``) are passed to ``"chunked"`` at call time.
"""

from __future__ import annotations

import os
import warnings

import torch

from ..checks import flag_invalid_values, is_pairs, pairs_to_complex
from ..chunked import scan_chunked
from ..reference import scan_sequential

__all__ = ["triton_available", "scan_triton_or_chunked", "self_check", "mixer_available", "mixer_self_check"]

_CHECKED: dict[str, bool] = {}
_MIXER_CHECKED: dict[str, bool] = {}
_SELF_CHECK_TOL = 1e-4


def self_check(device: torch.device) -> tuple[bool, str]:
    """Compile and run the scan kernels on ``device`` and compare their values and gradients with the
    float64 ``"sequential"`` reference, with and without h0 (p near 0, near 1 and mixed; L, D not
    multiples of any block). Returns ``(ok, message)``; never raises."""
    try:
        from .scan import scan_triton  # imports triton
    except Exception as err:  # ImportError, or a broken Triton install
        return False, f"Triton could not be imported ({type(err).__name__}: {err})"
    gen = torch.Generator(device="cpu").manual_seed(0)
    B, L, D = 2, 37, 19  # 3 tiles of 16 rows
    p = torch.rand(B, L, D, generator=gen, dtype=torch.float64)
    p[0, :, :6] = 1e-6
    p[0, :, 6:12] = 1 - 1e-6
    theta = 3 * torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    u, gout = (torch.randn(B, L, D, generator=gen, dtype=torch.complex128) for _ in range(2))
    h0 = torch.randn(B, D, generator=gen, dtype=torch.complex128)
    return _compare(scan_triton, scan_sequential, [p, theta, u, h0], gout, ("h", "dp", "dtheta", "du", "dh0"),
                    device, "the kernels")


def mixer_self_check(device: torch.device) -> tuple[bool, str]:
    """The same for the fused mixer (:mod:`minimipt.ops.triton.mixer`) against its float64 twin (z spread
    so that p reaches both ends). Returns ``(ok, message)``; never raises."""
    try:
        from .mixer import mixer_reference, mixer_triton  # imports triton
    except Exception as err:
        return False, f"Triton could not be imported ({type(err).__name__}: {err})"
    gen = torch.Generator(device="cpu").manual_seed(0)
    B, L, D = 2, 37, 9
    proj = torch.randn(B, L, 4 * D, generator=gen, dtype=torch.float64)
    proj[..., :D] *= 8  # z: p from ~1e-4 to 1 − 1e-4
    h0 = torch.randn(B, D, generator=gen, dtype=torch.complex128)
    gy = torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    return _compare(mixer_triton, mixer_reference, [proj, h0], gy, ("y", "dproj", "dh0"), device, "the fused mixer")


def _compare(fn, reference, inputs: list, gout: torch.Tensor, names: tuple, device: torch.device,
             what: str) -> tuple[bool, str]:
    """``fn`` on float32/complex64 copies of ``inputs`` against ``reference`` in float64, with and without
    the last input (h0: a separate compilation); values and the gradients of Re Σ out·conj(gout) within
    the self-check tolerance (NaN fails). ``(ok, message)``; a compile or launch failure is a message."""
    try:
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            for args, suffix in ((inputs, ""), (inputs[:-1], " (no h0)")):
                wide = [x.to(device).requires_grad_() for x in args]
                narrow = [x.detach().to(torch.complex64 if x.is_complex() else torch.float32).requires_grad_()
                          for x in wide]
                results = []
                for f, xs in ((reference, wide), (fn, narrow)):
                    out = f(*xs)
                    loss = (out * gout.to(device, out.dtype).conj()).real.sum()
                    results.append((out, *torch.autograd.grad(loss, xs)))
                bad = _mismatch(names, results[1], results[0], suffix)
                if bad:
                    return False, bad
    except Exception as err:  # a compile or launch failure
        return False, f"{what} failed on {device} ({type(err).__name__}: {err})"
    return True, "ok"


def _mismatch(names, ours, refs, suffix: str = "") -> str | None:
    """The first of ``ours`` whose relative error to ``refs`` exceeds the self-check tolerance (NaN
    included), as a message; None when all agree."""
    for name, x, ref in zip(names, ours, refs):
        err = ((x.to(ref.dtype) - ref).abs().norm() / ref.abs().norm()).item()
        if not err <= _SELF_CHECK_TOL:  # also catches NaN
            return f"self-check mismatch in {name}{suffix}: relative error {err:.2e}"
    return None


def _checked_once(cache: dict[str, bool], device: torch.device, check, disabled: str, instead: str) -> bool:
    """``check(device)``'s verdict, run once per device (a CUDA device without an index is the current
    one) and cached in ``cache``; a failure warns once, naming what is ``disabled`` and what is used ``instead``."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = str(device)
    if key not in cache:
        ok, message = check(device)
        if not ok:
            warnings.warn(f"minimipt: {disabled} on {key}: {message}; {instead}", RuntimeWarning, stacklevel=3)
        cache[key] = ok
    return cache[key]


def triton_available(device: torch.device) -> bool:
    """Whether method ``"triton"`` runs correctly on ``device`` (checked once per device): a CUDA device,
    or the CPU under Triton's interpreter (``TRITON_INTERPRET=1``)."""
    device = torch.device(device)
    on_gpu = device.type == "cuda" and torch.cuda.is_available()
    interpreted = device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "") == "1"
    if not (on_gpu or interpreted):
        return False
    return _checked_once(_CHECKED, device, self_check, "scan method 'triton' disabled", "using 'chunked' instead")


def mixer_available(device: torch.device) -> bool:
    """Whether ``MIPTLayer(fused_mixer=True)`` may use the fused mixer on ``device``: method ``"triton"``
    is available there and the mixer passes its own first-use self-check (once per device; if it
    fails, a warning says why and the layer keeps its split path)."""
    device = torch.device(device)
    if not triton_available(device):
        return False
    return _checked_once(_MIXER_CHECKED, device, mixer_self_check, "the fused mixer is disabled",
                         "MIPTLayer(fused_mixer=True) uses the split path instead")


def scan_triton_or_chunked(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor,
                           h0: torch.Tensor | None = None, *, bad: torch.Tensor | None = None) -> torch.Tensor:
    """Method ``"triton"``: the fused kernels for complex64 ``u`` or its ``(re, im)`` pairs
    ``(B, L, D, 2)`` (float32 or bf16: θ and u stay narrow in memory, the state is float32), else
    ``"chunked"``. ``bad`` (int32, one element, or None): set to 1 for invalid input values, by the
    forward kernel itself or, on the ``"chunked"`` path, by :func:`~minimipt.ops.checks.flag_invalid_values`."""
    pairs = is_pairs(u)
    if not (pairs or u.dtype == torch.complex64) or not triton_available(u.device):
        if bad is not None:
            flag_invalid_values(p, theta, u, h0, bad)
        return scan_chunked(p, theta, pairs_to_complex(u) if pairs else u, h0)
    from .scan import scan_triton

    return scan_triton(p, theta, u, h0, bad=bad)

