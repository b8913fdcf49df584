"""The definitions, written to be read: the MIPT recurrence as a loop.

Every other method (:mod:`minimipt.ops.chunked`, :mod:`minimipt.ops.closed_form`, the Triton kernel
in :mod:`minimipt.ops.triton`) computes exactly what this module defines, and the tests compare
their values and gradients with it. The cache's definitions (the streaming write rule and dense
attention over the held positions) are here too, below the scan: :func:`eviction_times_reference`
(which positions a K-slot cache holds, by the streaming write/evict rule) and
:func:`cache_attention_dense` (attention over them); :mod:`minimipt.cache` states their mathematics.

One layer of MIPT-SSM runs, independently for every channel ``d`` of a complex state,

    h_t = (1 - p_t) · e^{iθ_t} · h_{t-1}  +  p_t · u_t,        h_{-1} = h0 (zeros if None)

with a measurement rate ``p_t ∈ [0, 1]``, a real phase ``θ_t`` and a complex input ``u_t``. Written
as a first-order linear recurrence ``h_t = a_t h_{t-1} + b_t`` it has the *gate*
``a_t = (1 - p_t) e^{iθ_t}`` (``|a_t| ≤ 1``) and the *input* ``b_t = p_t u_t``.

Shapes (glossary in ``minimipt/__init__.py``): ``p``, ``theta``: real ``(B, L, D)``; ``u``: complex
``(B, L, D)``; ``h0``: complex ``(B, D)``; result: complex ``(B, L, D)``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["gate_and_input", "scan_sequential", "write_scores", "eligible_mask", "eviction_times_reference",
           "softmax_with_sink", "cache_attention_dense"]

_NEG_INF = float("-inf")


def gate_and_input(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor):
    """``a = (1 - p) e^{iθ}`` and ``b = p u`` in the complex dtype of ``u`` (p, θ cast to its real dtype)."""
    real = u.real.dtype
    p, theta = p.to(real), theta.to(real)
    # (1 − p)·e^{iθ} as a product, not torch.polar(1 − p, θ): polar's backward loses ∂a/∂p where
    # its modulus is exactly 0 (p = 1), and p = 1 is a legal input
    a = (1 - p) * torch.polar(torch.ones_like(theta), theta)  # (B, L, D) complex, |a| = 1 − p ≤ 1
    b = p * u  # (B, L, D) complex
    return a, b


def scan_sequential(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor,
                    h0: torch.Tensor | None = None) -> torch.Tensor:
    """Method ``"sequential"``: ``h_t = (1 - p_t) e^{iθ_t} h_{t-1} + p_t u_t``, one token at a time."""
    a, b = gate_and_input(p, theta, u)
    B, L, D = b.shape
    h = torch.zeros(B, D, dtype=b.dtype, device=b.device) if h0 is None else h0.to(b.dtype)
    out = []
    for t in range(L):
        h = a[:, t] * h + b[:, t]  # (B, D)
        out.append(h)
    return torch.stack(out, dim=1)  # (B, L, D)


# ----------------------------------------------------------------------------------------------
# the cache: write scores, the streaming write/evict rule, attention over what is held
# ----------------------------------------------------------------------------------------------

def write_scores(log_p: torch.Tensor) -> torch.Tensor:
    """``log w = logsumexp_d(log p) − log D``: ``(..., D)`` → ``(...)`` in float32 (or float64)."""
    log_p = log_p if log_p.dtype in (torch.float32, torch.float64) else log_p.float()
    return torch.logsumexp(log_p, dim=-1) - math.log(log_p.shape[-1])


def eligible_mask(log_w: torch.Tensor, threshold: float) -> torch.Tensor:
    """``w ≥ τ`` as a bool tensor (all True for ``τ = 0``)."""
    if threshold <= 0:
        return torch.ones_like(log_w, dtype=torch.bool)
    return log_w >= math.log(threshold)



@torch.no_grad()
def eviction_times_reference(log_w: torch.Tensor, eligible: torch.Tensor, slots: int | None) -> torch.Tensor:
    """The streaming write/evict rule as a plain loop (slow twin of :func:`eviction_times`)."""
    B, L = log_w.shape
    out = torch.arange(L).expand(B, L).clone()
    for b in range(B):
        held: list[int] = []
        for t in range(L):
            if not eligible[b, t]:
                continue
            w = log_w[b, t].item()
            if slots is None or len(held) < slots:
                held.append(t)
                out[b, t] = L
                continue
            victim = min(held, key=lambda s: (log_w[b, s].item(), s))  # lowest score, oldest first
            if w >= log_w[b, victim].item():
                held.remove(victim)
                out[b, victim] = t
                held.append(t)
                out[b, t] = L
    return out.to(log_w.device)



def softmax_with_sink(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim with one extra logit 0 (the null sink) whose weight is dropped."""
    ext = torch.cat([logits, logits.new_zeros(logits.shape[:-1] + (1,))], dim=-1)
    if ext.dtype not in (torch.float32, torch.float64):
        ext = ext.float()  # half precision logits: softmax in float32
    return torch.softmax(ext, dim=-1)[..., :-1]


def cache_attention_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor,
                          evict: torch.Tensor, slots: int | None = None) -> torch.Tensor:
    """Reference: masked attention with materialised ``(B, H, L, L)`` logits.

    ``q, k, v``: ``(B, L, H, d_h)``; ``log_w``: ``(B, L)``; ``evict``: ``(B, L)`` from
    :func:`eviction_times` (it alone defines what is held, so ``slots`` is unused). → ``(B, L, H, d_h)``.
    """
    B, L, H, dh = q.shape
    pos = torch.arange(L, device=q.device)
    held = (pos[None, :, None] >= pos[None, None, :]) & (pos[None, :, None] < evict[:, None, :])  # (B, t, s)
    logits = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(dh) + log_w[:, None, None, :]
    logits = logits.masked_fill(~held[:, None], _NEG_INF)  # (B, H, L, L)
    a = softmax_with_sink(logits).to(v.dtype)
    return torch.einsum("bhts,bshd->bthd", a, v)
