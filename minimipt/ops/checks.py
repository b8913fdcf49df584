"""Input checks of :func:`minimipt.mipt_scan`, and the ``(re, im)`` pair form of a complex input."""

from __future__ import annotations

import torch

__all__ = ["check_scan_inputs", "is_pairs", "pairs_to_complex"]


def check_scan_inputs(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None,
                      check_values: bool = True) -> None:
    """Raise ``ValueError`` naming the argument when the inputs do not fit the recurrence."""
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
        if h0.device != u.device:
            raise ValueError(f"h0 is on {h0.device} but u is on {u.device}")
    if check_values:
        # four reductions and one host sync; min/max and sums propagate NaN and inf
        with torch.no_grad():
            lo, hi, th, uu = torch.stack([p.amin().double(), p.amax().double(), theta.sum().double(),
                                          (u if is_pairs(u) else torch.view_as_real(u)).sum().double()]).tolist()
        if lo != lo or hi != hi or abs(lo) == float("inf") or abs(hi) == float("inf"):
            raise ValueError(f"p of shape {tuple(p.shape)} contains NaN or inf")
        if lo < 0 or hi > 1:
            raise ValueError(f"p must lie in [0, 1] (it is a rate, e.g. torch.sigmoid(logits)); "
                             f"got values in [{lo:.4g}, {hi:.4g}]")
        if not torch.isfinite(torch.tensor(th)):
            raise ValueError(f"theta of shape {tuple(theta.shape)} contains NaN or inf")
        if not torch.isfinite(torch.tensor(uu)):
            raise ValueError(f"u of shape {tuple(u.shape)} contains NaN or inf")
        if h0 is not None and not torch.isfinite(torch.view_as_real(h0)).all():
            raise ValueError(f"h0 of shape {tuple(h0.shape)} contains NaN or inf")


def is_pairs(u: torch.Tensor) -> bool:
    """Whether ``u`` is the real ``(re, im)`` pair form ``(B, L, D, 2)`` of a complex input."""
    return not u.is_complex() and u.is_floating_point() and u.dim() == 4 and u.shape[-1] == 2


def pairs_to_complex(u: torch.Tensor) -> torch.Tensor:
    """``(B, L, D, 2)`` real pairs → complex ``(B, L, D)`` (bf16/fp16 widened to complex64); differentiable."""
    wide = u if u.dtype in (torch.float32, torch.float64) else u.float()
    return torch.view_as_complex(wide.contiguous())
