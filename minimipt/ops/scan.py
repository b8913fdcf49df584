"""``mipt_scan``: the public entry point of the recurrence, its input checks and its methods.

    h_t = (1 - p_t) · e^{iθ_t} · h_{t-1}  +  p_t · u_t        (defined in :mod:`minimipt.ops.reference`)

Methods (all compute the same function; tests compare values and gradients):

* ``"sequential"`` (:mod:`~minimipt.ops.reference`): the loop, one step per token. It *is* the definition.
* ``"chunked"`` (:mod:`~minimipt.ops.chunked`): parallel, pure PyTorch, the default off CUDA.
* ``"closed_form"`` (:mod:`~minimipt.ops.closed_form`): a ``C × C`` matrix per chunk, for teaching.
* ``"triton"`` (:mod:`~minimipt.ops.triton`): a fused GPU kernel, the default on CUDA when Triton
  works there (checked once per device; otherwise ``"auto"`` falls back to ``"chunked"``).

More methods can be added with :func:`register_scan_method`.

Input checks (:mod:`~minimipt.ops.checks`): the structure always; with ``check_values`` (the
default) also the values, by one pass over each input and one wait for the device — or, for a method
registered with ``checks_values=True``, by a flag its kernel raises while reading the inputs anyway:
then the only extra cost is reading those 4 bytes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .checks import check_scan_structure, check_scan_values, is_pairs, pairs_to_complex
from .chunked import scan_chunked
from .closed_form import scan_closed_form
from .reference import gate_and_input, scan_sequential
from .triton import scan_triton_or_chunked, triton_available

__all__ = ["mipt_scan", "register_scan_method", "scan_methods", "resolve_method"]

ScanFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class _Method:
    fn: ScanFn
    available: Callable[[torch.device], bool]
    priority: int  # "auto" picks the available method with the highest priority for the device
    pairs: bool = False  # fn also reads u as real (re, im) pairs (B, L, D, 2); else mipt_scan widens them
    checks_values: bool = False  # fn(..., bad=flag) raises flag on invalid values; mipt_scan skips its own pass


_REGISTRY: dict[str, _Method] = {}


def register_scan_method(name: str, fn: ScanFn, *, available: Callable[[torch.device], bool] | None = None,
                         priority: int = 0, pairs: bool = False, checks_values: bool = False) -> None:
    """Add a method to :func:`mipt_scan`.

    ``fn(p, theta, u, h0) -> h`` must compute exactly the recurrence above with the same shapes.
    ``available(device)`` says whether it can run on that device *now* (checked at call time, so
    a kernel that fails to compile can fall back). ``"auto"`` picks the available method with the
    highest ``priority``. ``pairs``: ``fn`` also accepts ``u`` as real ``(re, im)`` pairs
    ``(B, L, D, 2)`` (e.g. bf16, read as float32); otherwise :func:`mipt_scan` converts them to complex.
    ``checks_values``: ``fn`` also takes a keyword ``bad`` (default None: no check), an int32 tensor of
    one element (0) on the inputs' device, and sets it nonzero when some p lies outside ``[0, 1]`` or
    some p, θ, u, h0 is NaN or inf (e.g. one atomic or per program of its kernel;
    :func:`~minimipt.ops.checks.flag_invalid_values` for inputs it hands elsewhere). ``mipt_scan``
    then reads ``bad`` after the call instead of making its own pass over the inputs.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"method name must be a non-empty string, got {name!r}")
    _REGISTRY[name] = _Method(fn, available or (lambda device: True), priority, pairs, checks_values)


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
register_scan_method("triton", scan_triton_or_chunked, available=triton_available, priority=20, pairs=True,
                     checks_values=True)


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
        check_values: also check that ``p ∈ [0, 1]`` and nothing is NaN/inf (a ``ValueError`` names
            the argument). Unless the method checks the values inside its kernel (``checks_values``
            in :func:`register_scan_method`), this reads every input once more and waits for the
            device; shapes and dtypes are always checked. Pass ``False`` in a hot loop whose inputs
            are known to be valid (:class:`~minimipt.MIPTLayer` does: p comes from a sigmoid).

    Returns:
        ``h``: complex ``(B, L, D)``, the state after each token. Differentiable in all inputs.
        ``B = 0`` or ``D = 0`` gives an empty ``h`` of that shape.
    """
    check_scan_structure(p, theta, u, h0)
    if p.numel() == 0:
        return _empty_scan(p, theta, u, h0)
    name = resolve_method(method, u.device)
    m = _REGISTRY[name]
    if check_values and not m.checks_values:
        check_scan_values(p, theta, u, h0)
    if is_pairs(u) and not m.pairs:
        u = pairs_to_complex(u)
    if not (check_values and m.checks_values):
        return m.fn(p, theta, u, h0)
    bad = torch.zeros(1, dtype=torch.int32, device=u.device)
    h = m.fn(p, theta, u, h0, bad=bad)
    if bad.item():  # 4 bytes: the only wait for the device
        check_scan_values(p, theta, u, h0)  # words the error
        raise RuntimeError(f"scan method {name!r} flagged invalid inputs that check_scan_values does not find "
                           f"(a bug in the method); call mipt_scan(..., method='chunked') meanwhile")
    return h


def _empty_scan(p, theta, u, h0):
    """The (empty) result for ``B = 0`` or ``D = 0``, in u's complex dtype, connected to every input."""
    a, b = gate_and_input(p, theta, pairs_to_complex(u) if is_pairs(u) else u)
    h = a * 0 + b  # (B, L, D), no elements
    return h if h0 is None else h + h0.to(h.dtype)[:, None] * 0
