"""Fast GPU kernels, registered as :func:`minimipt.mipt_scan` methods.

Reading order: this file (availability and the first-use self-checks), :mod:`.scan` (the recurrence's
equations, launch configurations, launches and autograd), :mod:`.mixer` (the layer's fused mixer), then
the kernels: :mod:`._tl_scan`, :mod:`._tl_mixer` and the device functions they share, :mod:`._tl`.

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

from ..checks import is_pairs, pairs_to_complex
from ..chunked import scan_chunked
from ..reference import scan_sequential

__all__ = ["triton_available", "scan_triton_or_chunked", "self_check", "mixer_available", "mixer_self_check"]

_CHECKED: dict[str, bool] = {}
_MIXER_CHECKED: dict[str, bool] = {}
_SELF_CHECK_TOL = 1e-4


def self_check(device: torch.device) -> tuple[bool, str]:
    """Compile and run the Triton kernel on ``device`` and compare it with the reference.

    Returns ``(ok, message)``; never raises.
    """
    try:
        from . import scan as triton_scan  # imports triton
    except Exception as err:  # ImportError, or a broken Triton install
        return False, f"Triton could not be imported ({type(err).__name__}: {err})"
    try:
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            gen = torch.Generator(device="cpu").manual_seed(0)
            B, L, D = 2, 37, 19  # L, D not multiples of any block size; 3 tiles of 16 rows
            p = torch.rand(B, L, D, generator=gen, dtype=torch.float64)
            p[0, :, :11] = 1e-6
            p[0, :, 11:22] = 1 - 1e-6
            theta = 3 * torch.randn(B, L, D, generator=gen, dtype=torch.float64)
            u = torch.randn(B, L, D, 2, generator=gen, dtype=torch.float64)
            h0 = torch.randn(B, D, 2, generator=gen, dtype=torch.float64)
            gout = torch.randn(B, L, D, 2, generator=gen, dtype=torch.float64)
            ref_in = [p, theta, torch.view_as_complex(u), torch.view_as_complex(h0)]
            ref_in = [x.to(device).requires_grad_() for x in ref_in]
            ours_in = [x.detach().to(torch.complex64 if x.is_complex() else torch.float32).requires_grad_()
                       for x in ref_in]
            g = torch.view_as_complex(gout).to(device)
            h_ref = scan_sequential(*ref_in)
            grads_ref = torch.autograd.grad((h_ref * g.conj()).real.sum(), ref_in)
            h = triton_scan.scan_triton(*ours_in)
            grads = torch.autograd.grad((h * g.to(h.dtype).conj()).real.sum(), ours_in)
            bad = _mismatch(("h", "dp", "dtheta", "du", "dh0"), (h, *grads), (h_ref, *grads_ref))
            if bad:
                return False, bad
            # the variant without h0 is a separate compilation
            h = triton_scan.scan_triton(*ours_in[:3])
            grads = torch.autograd.grad((h * g.to(h.dtype).conj()).real.sum(), ours_in[:3])
            h_ref = scan_sequential(*ref_in[:3])
            grads_ref = torch.autograd.grad((h_ref * g.conj()).real.sum(), ref_in[:3])
            bad = _mismatch(("h", "dp", "dtheta", "du"), (h, *grads), (h_ref, *grads_ref), " (no h0)")
            if bad:
                return False, bad
    except Exception as err:  # a compile or launch failure
        return False, f"the kernel failed on {device} ({type(err).__name__}: {err})"
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


def mixer_self_check(device: torch.device) -> tuple[bool, str]:
    """Compile and run the fused mixer (:mod:`minimipt.ops.triton.mixer`) on ``device`` and compare
    its values and gradients (w.r.t. the projection and h0, with and without h0) with its float64 twin
    on a small problem (z spread so that p reaches both ends; L, D not multiples of any block).

    Returns ``(ok, message)``; never raises.
    """
    try:
        from . import mixer as triton_mixer  # imports triton
    except Exception as err:
        return False, f"Triton could not be imported ({type(err).__name__}: {err})"
    try:
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            gen = torch.Generator(device="cpu").manual_seed(0)
            B, L, D = 2, 37, 9  # L, D not multiples of any block size
            proj = torch.randn(B, L, 4 * D, generator=gen, dtype=torch.float64)
            proj[..., :D] *= 8  # z: p from ~1e-4 to 1 − 1e-4
            h0 = torch.view_as_complex(torch.randn(B, D, 2, generator=gen, dtype=torch.float64))
            gy = torch.randn(B, L, D, generator=gen, dtype=torch.float64).to(device)
            for args in ((proj, h0), (proj,)):
                ref_in = [x.to(device).requires_grad_() for x in args]
                ours_in = [x.detach().to(torch.complex64 if x.is_complex() else torch.float32).requires_grad_()
                           for x in ref_in]
                y_ref = triton_mixer.mixer_reference(*ref_in)
                grads_ref = torch.autograd.grad((y_ref * gy).sum(), ref_in)
                y = triton_mixer.mixer_triton(*ours_in)
                grads = torch.autograd.grad((y * gy.float()).sum(), ours_in)
                bad = _mismatch(("y", "dproj", "dh0"), (y, *grads), (y_ref, *grads_ref),
                                "" if len(args) == 2 else " (no h0)")
                if bad:
                    return False, bad
    except Exception as err:  # a compile or launch failure
        return False, f"the fused mixer failed on {device} ({type(err).__name__}: {err})"
    return True, "ok"


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
                           h0: torch.Tensor | None = None) -> torch.Tensor:
    """Method ``"triton"``: the fused kernels for complex64 ``u`` or its ``(re, im)`` pairs
    ``(B, L, D, 2)`` (float32 or bf16: θ and u stay narrow in memory, the state is float32), else
    ``"chunked"``."""
    pairs = is_pairs(u)
    if not (pairs or u.dtype == torch.complex64) or not triton_available(u.device):
        return scan_chunked(p, theta, pairs_to_complex(u) if pairs else u, h0)
    from .scan import scan_triton

    return scan_triton(p, theta, u, h0)

