"""``mipt_scan``: the public entry point of the recurrence, its input checks and its methods.

    h_t = (1 - p_t) · e^{iθ_t} · h_{t-1}  +  p_t · u_t        (defined in :mod:`minimipt.ops.reference`)

Methods (all compute the same function; tests compare values and gradients):

* ``"sequential"`` (:mod:`~minimipt.ops.reference`): the loop, one step per token. It *is* the definition.
* ``"chunked"`` (:mod:`~minimipt.ops.chunked`): parallel, pure PyTorch, the default off CUDA.
* ``"closed_form"`` (:mod:`~minimipt.ops.closed_form`): a ``C × C`` matrix per chunk, for teaching.
* ``"triton"`` (:mod:`~minimipt.ops.triton`): a fused GPU kernel, the default on CUDA when Triton
  works there (checked once per device; otherwise ``"auto"`` falls back to ``"chunked"``).

More methods can be added with :func:`register_scan_method`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .checks import check_scan_inputs, is_pairs, pairs_to_complex
from .chunked import scan_chunked
from .closed_form import scan_closed_form
from .reference import scan_sequential
from .triton import scan_triton_or_chunked, triton_available

__all__ = ["mipt_scan", "register_scan_method", "scan_methods", "resolve_method"]

ScanFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class _Method:
    fn: ScanFn
    available: Callable[[torch.device], bool]
    priority: int  # "auto" picks the available method with the highest priority for the device
    pairs: bool = False  # fn also reads u as real (re, im) pairs (B, L, D, 2); else mipt_scan widens them


_REGISTRY: dict[str, _Method] = {}


def register_scan_method(name: str, fn: ScanFn, *, available: Callable[[torch.device], bool] | None = None,
                         priority: int = 0, pairs: bool = False) -> None:
    """Add a method to :func:`mipt_scan`.

    ``fn(p, theta, u, h0) -> h`` must compute exactly the recurrence above with the same shapes.
    ``available(device)`` says whether it can run on that device *now* (checked at call time, so
    a kernel that fails to compile can fall back). ``"auto"`` picks the available method with the
    highest ``priority``. ``pairs``: ``fn`` also accepts ``u`` as real ``(re, im)`` pairs
    ``(B, L, D, 2)`` (e.g. bf16, read as float32); otherwise :func:`mipt_scan` converts them to complex.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"method name must be a non-empty string, got {name!r}")
    _REGISTRY[name] = _Method(fn, available or (lambda device: True), priority, pairs)


def scan_methods() -> list[str]:
    """Names of all registered methods."""
    return sorted(_REGISTRY)


def resolve_method(method: str, device: torch.device) -> str:
    """The method ``mipt_scan`` would run for ``method`` on ``device``."""
    if method == "auto":
        usable = [(m.priority, name) for name, m in _REGISTRY.items() if m.available(device)]
        return max(usable)[1]
    if method not in _REGISTRY:
        raise ValueError(f"unknown scan method {method!r}; choose 'auto' or one of {scan_methods()}")
    if not _REGISTRY[method].available(device):
        raise ValueError(f"scan method {method!r} is not available on device {device}; use method='auto'")
    return method


register_scan_method("sequential", scan_sequential, priority=0)
register_scan_method("closed_form", scan_closed_form, priority=5)
register_scan_method("chunked", scan_chunked, priority=10)
register_scan_method("triton", scan_triton_or_chunked, available=triton_available, priority=20, pairs=True)


def mipt_scan(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None = None,
              method: str = "auto", *, check_values: bool = True) -> torch.Tensor:
    """Run the MIPT recurrence ``h_t = (1 - p_t) e^{iθ_t} h_{t-1} + p_t u_t`` over a sequence.

    Args:
        p: measurement rate in ``[0, 1]``, real ``(B, L, D)``.
        theta: phase angle in radians, real ``(B, L, D)``.
        u: complex input ``(B, L, D)``; the state takes ``u``'s complex dtype. Or its real
            ``(re, im)`` pairs ``(B, L, D, 2)``, e.g. bf16 under autocast: methods registered with
            ``pairs=True`` (the Triton kernel) read them as they are, with a float32 state; for the
            others they are widened to complex first.
        h0: state before the first token, complex ``(B, D)``; zeros if None.
        method: ``"auto"`` (fastest correct method for the device), ``"sequential"`` (reference),
            ``"chunked"``, ``"closed_form"``, or any name added by :func:`register_scan_method`.
        check_values: also check that ``p ∈ [0, 1]`` and nothing is NaN/inf. This reads every input
            once and waits for the device (about the cost of the scan itself on a GPU); shapes and
            dtypes are always checked. Pass ``False`` in a hot loop whose inputs are known to be valid.

    Returns:
        ``h``: complex ``(B, L, D)``, the state after each token. Differentiable in all inputs.
    """
    check_scan_inputs(p, theta, u, h0, check_values=check_values)
    m = _REGISTRY[resolve_method(method, u.device)]
    if is_pairs(u) and not m.pairs:
        u = pairs_to_complex(u)
    return m.fn(p, theta, u, h0)
