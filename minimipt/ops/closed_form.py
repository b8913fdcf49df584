"""Method ``"closed_form"``: the chunked scan with a ``C × C`` matrix per chunk (the teaching version).

The same two levels as :mod:`minimipt.ops.chunked`, with each chunk's closed form

    h_j = A_j h_in + Σ_{s ≤ j} exp(Σ_{r=s+1}^{j} log a_r) · b_s,     A_j = exp(Σ_{r ≤ j} log a_r)

evaluated as a ``C × C`` matrix per channel (``C`` = :data:`CHUNK_SIZE`); the sums of logs in the
exponent come from a masked cumulative sum, never as a difference of two large cumulative sums,
so no cancellation and no division occurs. Exact and stable, but it moves ~C× the data's bytes
(notebook 05 derives it).
"""

from __future__ import annotations

import torch

from .reference import gate_and_input

__all__ = ["CHUNK_SIZE", "scan_closed_form", "linear_scan_closed_form"]

CHUNK_SIZE = 16  # chunk length of "closed_form"
# Largest number of complex elements the intra-chunk C×C matrices may take at once; larger inputs
# are processed in pieces so the transient memory stays bounded.
_MAX_CHUNK_ELEMENTS = 1 << 26


def _scan_log_forward(log_mag: torch.Tensor, phase: torch.Tensor, b: torch.Tensor,
                      h0: torch.Tensor | None, chunk: int = CHUNK_SIZE) -> torch.Tensor:
    """Solve ``h_t = exp(log_mag_t + i·phase_t) h_{t-1} + b_t`` without autograd.

    ``log_mag`` (may hold ``-inf`` where a gate is exactly 0) and ``phase``: real ``(N, L, D)``;
    ``b``: complex ``(N, L, D)``; ``h0``: complex ``(N, D)`` or None. Returns complex ``(N, L, D)``.
    """
    N, L, D = b.shape
    C = min(chunk, L)
    n_chunks = -(-L // C)
    pad = n_chunks * C - L
    if pad:  # pad with a = 0 (log_mag = -inf) and b = 0; the padded outputs are dropped
        log_mag = torch.cat([log_mag, log_mag.new_full((N, pad, D), float("-inf"))], 1)
        phase = torch.cat([phase, phase.new_zeros(N, pad, D)], 1)
        b = torch.cat([b, b.new_zeros(N, pad, D)], 1)
    lm = log_mag.reshape(N * n_chunks, C, D)  # (M, C, D) with M = N · n_chunks
    ph = phase.reshape(N * n_chunks, C, D)
    bc = b.reshape(N * n_chunks, C, D)

    # local states (zero carry-in) and cumulative gates A_j inside every chunk
    local = torch.empty_like(bc)  # (M, C, D)
    rows = max(1, _MAX_CHUNK_ELEMENTS // (C * C * D))
    keep = torch.tril(torch.ones(C, C, dtype=torch.bool, device=b.device), diagonal=-1)  # r > s
    upper = ~torch.tril(torch.ones(C, C, dtype=torch.bool, device=b.device))  # s > j
    for start in range(0, lm.shape[0], rows):
        sl = slice(start, start + rows)
        # S[j, s] = Σ_{r=s+1}^{j} log a_r: expand log a_r along s, keep r > s, cumsum over r
        x_mag = torch.where(keep[None, :, :, None], lm[sl, :, None, :], 0.0).cumsum(1)  # (m, C_j, C_s, D)
        x_mag = x_mag.masked_fill(upper[None, :, :, None], float("-inf"))
        x_ph = torch.where(keep[None, :, :, None], ph[sl, :, None, :], 0.0).cumsum(1)
        M = torch.polar(torch.exp(x_mag), x_ph)  # (m, C, C, D) complex; zero above the diagonal
        local[sl] = torch.einsum("mjsd,msd->mjd", M, bc[sl])
    A = torch.polar(torch.exp(lm.cumsum(1)), ph.cumsum(1))  # (M, C, D): Π_{r ≤ j} a_r within the chunk

    A = A.reshape(N, n_chunks, C, D)
    local = local.reshape(N, n_chunks, C, D)
    # chunk-level recurrence for the state entering each chunk: H_c = A_{c,C-1} H_{c-1} + local_{c,C-1}
    if n_chunks == 1:
        carry_in = (h0 if h0 is not None else b.new_zeros(N, D))[:, None]  # (N, 1, D)
    else:
        chunk_lm = lm.reshape(N, n_chunks, C, D).sum(2)  # (N, n_chunks, D), may be -inf
        chunk_ph = ph.reshape(N, n_chunks, C, D).sum(2)
        ends = _scan_log_forward(chunk_lm, chunk_ph, local[:, :, -1], h0, chunk)  # (N, n_chunks, D)
        first = (h0 if h0 is not None else b.new_zeros(N, D))[:, None]
        carry_in = torch.cat([first, ends[:, :-1]], 1)  # (N, n_chunks, D)
    h = local + A * carry_in[:, :, None, :]  # (N, n_chunks, C, D)
    return h.reshape(N, n_chunks * C, D)[:, :L]


def _log_gate(a: torch.Tensor):
    """``(log|a|, arg a)`` of a complex gate; ``log|a| = -inf`` where ``a = 0``."""
    return torch.log(a.abs()), torch.angle(a)


class _ClosedFormScan(torch.autograd.Function):
    """``h_t = a_t h_{t-1} + b_t`` by the closed-form forward; backward by the adjoint recurrence.

    With PyTorch's convention for complex gradients (``grad = ∂L/∂Re + i ∂L/∂Im``) and
    ``g_t = ∂L/∂h_t`` the total gradient reaching ``h_t``:

        g_t = gout_t + conj(a_{t+1}) g_{t+1},    g_L = 0          (a reverse linear scan)
        ∂L/∂b_t = g_t,   ∂L/∂a_t = g_t conj(h_{t-1}),   ∂L/∂h0 = conj(a_0) g_0.
    """

    @staticmethod
    def forward(ctx, a, b, h0):
        log_mag, phase = _log_gate(a)
        h = _scan_log_forward(log_mag, phase, b, h0)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, gout):
        a, h, h0 = ctx.saved_tensors
        N, L, D = a.shape
        log_mag, phase = _log_gate(a)
        # reversed time: G_k = conj(a_{L-k}) G_{k-1} + gout_{L-1-k}; the k = 0 gate is unused (G_{-1} = 0)
        r_mag = torch.cat([log_mag[:, 1:], log_mag.new_full((N, 1, D), float("-inf"))], 1).flip(1)
        r_ph = torch.cat([-phase[:, 1:], phase.new_zeros(N, 1, D)], 1).flip(1)
        g = _scan_log_forward(r_mag, r_ph, gout.flip(1), None).flip(1)  # (N, L, D)
        h_prev = torch.cat([(h0 if h0 is not None else h.new_zeros(N, D))[:, None], h[:, :-1]], 1)
        grad_a = g * h_prev.conj() if ctx.needs_input_grad[0] else None
        grad_b = g if ctx.needs_input_grad[1] else None
        grad_h0 = a[:, 0].conj() * g[:, 0] if (h0 is not None and ctx.needs_input_grad[2]) else None
        return grad_a, grad_b, grad_h0


def linear_scan_closed_form(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Closed-form (C×C per chunk) solution of ``h_t = a_t h_{t-1} + b_t`` for complex ``a``, ``b`` of shape ``(B, L, D)``.

    Differentiable in ``a``, ``b`` and ``h0`` (first derivatives; no double backward). Requires
    ``|a_t|`` to be finite; ``|a_t| ≤ 1`` keeps it exact at any length.
    """
    return _ClosedFormScan.apply(a.contiguous(), b.contiguous(), None if h0 is None else h0.to(b.dtype))


def scan_closed_form(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor,
                     h0: torch.Tensor | None = None) -> torch.Tensor:
    """Method ``"closed_form"``: the C×C closed form per chunk (see the module docstring)."""
    a, b = gate_and_input(p, theta, u)
    return linear_scan_closed_form(a, b, h0)
