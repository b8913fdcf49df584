"""Input checks of :func:`minimipt.mipt_scan`, and the ``(re, im)`` pair form of a complex input.

Two kinds of check:

* the *structure* (:func:`check_scan_structure`: types, shapes, dtypes, devices) costs nothing on
  the device and is always checked;
* the *values* (``p ∈ [0, 1]``, nothing NaN or inf) read every input. :func:`check_scan_values`
  makes one pass per tensor — the min and max of p, the largest ``|θ|``, ``|Re u|``, ``|Im u|``,
  ``|h0|``: maxima, never sums, so finite values near the float limit are not mistaken for inf —
  and one host synchronisation for all of them. :func:`flag_invalid_values` computes the same
  verdict on the device without waiting for it (for a scan method that checks the values itself,
  see ``checks_values`` in :func:`minimipt.ops.scan.register_scan_method`).
"""

from __future__ import annotations

import torch

__all__ = ["check_scan_inputs", "check_scan_structure", "check_scan_values", "flag_invalid_values",
           "state_real_dtype", "is_pairs", "pairs_to_complex"]

_INF = float("inf")


def check_scan_inputs(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None,
                      check_values: bool = True) -> None:
    """Raise ``ValueError`` naming the argument when the inputs do not fit the recurrence:
    :func:`check_scan_structure`, then (with ``check_values``) :func:`check_scan_values`."""
    check_scan_structure(p, theta, u, h0)
    if check_values:
        check_scan_values(p, theta, u, h0)


def check_scan_structure(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None) -> None:
    """Types, shapes, dtypes and devices (no value is read). ``B = 0`` and ``D = 0`` are allowed."""
    for name, x in (("p", p), ("theta", theta), ("u", u)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 and not (name == "u" and is_pairs(x)):
            raise ValueError(f"{name} must have shape (B, L, D); got {tuple(x.shape)}")
    for name, x in (("p", p), ("theta", theta)):
        if x.is_complex() or not x.is_floating_point():
            raise ValueError(f"{name} must be a real floating tensor; got dtype {x.dtype}")
    if not (u.is_complex() or is_pairs(u)):
        raise ValueError(f"u must be complex (e.g. torch.complex(u_re, u_im)) or real (re, im) pairs of shape "
                         f"(B, L, D, 2); got dtype {u.dtype} and shape {tuple(u.shape)}")
    if u.dtype == torch.complex32:
        raise ValueError("u has dtype complex32, which the scan does not compute in; pass u.to(torch.complex64) "
                         "(or its (re, im) pairs torch.view_as_real(u) in float16, read with a float32 state)")
    if not (p.shape == theta.shape == u.shape[:3]):
        raise ValueError(f"p, theta and u must have the same shape (B, L, D); got p {tuple(p.shape)}, "
                         f"theta {tuple(theta.shape)}, u {tuple(u.shape)}")
    if p.shape[1] == 0:
        raise ValueError(f"the sequence is empty: p has shape {tuple(p.shape)} (L = 0)")
    if not (p.device == theta.device == u.device):
        raise ValueError(f"p, theta and u must be on one device; got {p.device}, {theta.device}, {u.device}")
    if h0 is not None:
        B, _, D = u.shape[:3]
        if not isinstance(h0, torch.Tensor) or not h0.is_complex() or tuple(h0.shape) != (B, D):
            shape = tuple(h0.shape) if isinstance(h0, torch.Tensor) else type(h0).__name__
            raise ValueError(f"h0 must be a complex tensor of shape (B, D) = {(B, D)}; got {shape}"
                             + (f" with dtype {h0.dtype}" if isinstance(h0, torch.Tensor) else ""))
        if h0.dtype == torch.complex32:
            raise ValueError("h0 has dtype complex32, which the scan does not compute in; pass h0.to(torch.complex64)")
        if h0.device != u.device:
            raise ValueError(f"h0 is on {h0.device} but u is on {u.device}")


def _real_view(z: torch.Tensor) -> torch.Tensor:
    """A complex tensor's (re, im) as a real view (a conjugated view has the same magnitudes)."""
    return torch.view_as_real(z.conj() if z.is_conj() else z)


@torch.no_grad()
def _extremes(p, theta, u, h0) -> torch.Tensor:
    """float64 ``[min p, max p, max |θ|, max |u parts|(, max |h0 parts|)]``: one pass per tensor;
    NaN propagates through every entry it touches, inf shows as inf."""
    stats = [*torch.aminmax(p), torch.linalg.vector_norm(theta, _INF),
             torch.linalg.vector_norm(u if is_pairs(u) else _real_view(u), _INF)]
    if h0 is not None:
        stats.append(torch.linalg.vector_norm(_real_view(h0), _INF))
    return torch.stack([s.double() for s in stats])


def state_real_dtype(u: torch.Tensor) -> torch.dtype:
    """The real dtype the scan computes in: float64 for complex128 ``u`` (or float64 pairs), else float32."""
    return torch.float64 if u.dtype in (torch.complex128, torch.float64) else torch.float32


def check_scan_values(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None = None) -> None:
    """Raise ``ValueError`` naming the argument when p leaves ``[0, 1]``, any input holds NaN or inf,
    or θ, u, h0 hold values beyond the range of the dtype the scan computes in (they would become
    inf there): one pass over each input and one wait for the device (nothing read when B or D is 0)."""
    if p.numel() == 0:
        return
    lo, hi, th, uu, *hh = _extremes(p, theta, u, h0).tolist()
    if lo != lo or hi != hi or abs(lo) == _INF or abs(hi) == _INF:
        raise ValueError(f"p of shape {tuple(p.shape)} contains NaN or inf")
    if lo < 0 or hi > 1:
        raise ValueError(f"p must lie in [0, 1] (it is a rate, e.g. torch.sigmoid(logits)); "
                         f"got values in [{lo:.4g}, {hi:.4g}]")
    real = state_real_dtype(u)
    for name, x, big in (("theta", theta, th), ("u", u, uu), ("h0", h0, hh[0] if hh else 0.0)):
        if not big < _INF:  # NaN fails the comparison too
            raise ValueError(f"{name} of shape {tuple(x.shape)} contains NaN or inf")
        if big > torch.finfo(real).max:
            raise ValueError(f"{name} holds values up to {big:.3g} in magnitude, beyond {real} (the scan computes in "
                             f"{real} for u of dtype {u.dtype}): pass u as complex128"
                             + (" or reduce theta modulo 2π" if name == "theta" else ""))


@torch.no_grad()
def flag_invalid_values(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None,
                        bad: torch.Tensor) -> None:
    """Set ``bad`` (an int32 tensor of one element) to 1 where :func:`check_scan_values` would raise,
    on the device and without waiting for it: the fallback of a ``checks_values`` method for
    inputs its kernel does not take."""
    if p.numel() == 0:
        return
    x = _extremes(p, theta, u, h0)
    ok = (x[0] >= 0) & (x[1] <= 1) & (x[2:] <= torch.finfo(state_real_dtype(u)).max).all()  # NaN fails too
    bad.copy_(bad | (~ok).to(bad.dtype).reshape(bad.shape))


def is_pairs(u: torch.Tensor) -> bool:
    """Whether ``u`` is the real ``(re, im)`` pair form ``(B, L, D, 2)`` of a complex input."""
    return not u.is_complex() and u.is_floating_point() and u.dim() == 4 and u.shape[-1] == 2


def pairs_to_complex(u: torch.Tensor) -> torch.Tensor:
    """``(B, L, D, 2)`` real pairs → complex ``(B, L, D)`` (bf16/fp16 widened to complex64); differentiable."""
    wide = u if u.dtype in (torch.float32, torch.float64) else u.float()
    return torch.view_as_complex(wide.contiguous())
