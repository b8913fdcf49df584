"""Method ``"chunked"``: the MIPT recurrence in parallel, exact, in pure PyTorch (the default off CUDA).

The sequence is cut into chunks of ``C`` tokens (``chunk=``, default :data:`CHUNK`). Inside a chunk,
for the state ``H`` entering it,

    h_t = (Π_{k ≤ t} a_k) H + Σ_{j ≤ t} (Π_{j < k ≤ t} a_k) b_j,

evaluated in Horner order, ``h_t = a_t h_{t-1} + b_t``: ``C`` fused multiply-adds, each over all
chunks, batch rows and channels at once. A first pass gives every chunk's end state for ``H = 0``
and its gate product; the states entering the chunks then solve a recurrence of length ``L / C``
(the same method, recursively); a second pass writes ``h``. No product spans more than ``C`` gates
and nothing is divided, so nothing underflows or divides by ~0 at any length, and the extra memory
is a few tensors of the data's size. The backward pass is the adjoint recurrence
``λ_t = g_t + conj(a_{t+1}) λ_{t+1}``, the same two-pass scan run backwards in time (a custom
autograd function that also differentiates the gate in closed form).

Cost, in full-size passes (one read or write of a complex ``(B, L, D)`` tensor; a real one counts
½; counted per aten op at (B, D, L) = (32, 512, 8192), C = 16): forward ≈ 14.9: gate
``a = (1 − p) e^{iθ}`` 3 (``1 − p`` 1, polar 2), ``b = p u`` 2.5, pass 1 4 (reads ``a``, ``b``;
the running state read and written ``C`` times), chunk products 1, pass 2 4 (reads ``a``, ``b``,
``h_{t-1}``, writes ``h``), carries 0.4. Backward ≈ 30.0: ``conj(∂L/∂h)`` 2, the adjoint's two
passes 8, ``ν_t h_{t-1}`` 3, ``−e^{iθ}`` 1.5 and the product 3, ``∂L/∂θ`` 2, ``∂L/∂p`` 5.5,
``∂L/∂u = p conj(ν)`` 4.5, carries 0.5. Total ≈ 44.9. Each elementwise PyTorch op writes one
tensor, so the two conjugations (2 each) and the complex temporaries of ``∂L/∂p`` cannot be fused
away without a custom kernel.

Shapes as in :mod:`minimipt.ops.reference`.
"""

from __future__ import annotations

import torch

__all__ = ["CHUNK", "scan_chunked", "linear_scan"]

CHUNK = 16  # default chunk length C of "chunked" (16 and 32 tie on an H200): each pass is C dependent steps over (B, L/C, D)
_SEQUENTIAL_MAX = 16  # a carry recurrence this short (chunks per row) is solved by a plain loop


def _carry_chunk(n: int) -> int:
    """Chunk length for a carry recurrence of ``n`` chunks: ~∛n. The carry recurses (``n``, ``n / c``,
    ``n / c²``, …) and each level costs ~``2c`` small dependent steps, so short chunks keep the number
    of kernel launches low (at (B, D, L) = (32, 512, 8192), C = 16: 171 launches per forward+backward
    instead of 227 with ~√n) for the same bytes."""
    return max(2, round(n ** (1 / 3)))


def _scan_forward(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, chunk: int,
                  out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Solve ``h_t = a_t h_{t-1} + b_t`` with ``h_{-1} = h0`` (zeros if None); no autograd.

    ``a``, ``b``: complex ``(N, L, D)`` (``L`` contiguous with ``D``); ``h0``: complex ``(N, D)`` or None;
    ``out``: where to write ``h`` (may be ``b`` itself: each ``b_t`` is read for the last time by the
    step that writes ``h_t``). Returns ``h``: complex ``(N, L, D)``, and the chunks' gate products,
    padded on the left: ``Pp``: ``(N, L // C + 1, D)`` with ``Pp[:, 0] = 0`` and ``Pp[:, 1 + c] = P_c``
    (None when the sequence was too short to chunk), which :func:`_scan_adjoint` reuses (the padding
    makes the gates of its reverse carry a view).

    The first ``n·C`` positions are cut into ``n = L // C`` chunks, viewed as ``(N, n, C, D)``
    without a copy; the last ``L mod C`` positions (the tail) are stepped one at a time. Inside a
    chunk, ``h_t = (Π_{k ≤ t} a_k) H + Σ_{j ≤ t} (Π_{j < k ≤ t} a_k) b_j`` for the state ``H``
    entering it, evaluated in Horner order: one fused multiply-add per position, each over all
    chunks, rows and channels at once.

    1. pass 1: the chunk-end state ``E_c`` with ``H = 0`` (a running ``(N, n, D)`` state; nothing of
       full size is written) and the chunk's gate product ``P_c = Π_{k in chunk} a_k``;
    2. carry: ``X_c = P_c X_{c-1} + E_c`` with ``X_{-1} = h0`` is the same recurrence, ``n`` long:
       solved in place by this function (recursively) or by a loop when short; chunk ``c`` starts
       from ``H_c = X_{c-1}`` (``X`` sits in an ``(N, n + 1, D)`` buffer behind ``h0``, so ``H`` is a view);
    3. pass 2: the Horner steps again from ``H_c``, writing every ``h_t``.

    Only products of at most ``C`` gates and sums of at most ``C`` terms are ever formed, and nothing
    is divided: with ``|a_t| ≤ 1`` this is as accurate as the loop at any length.
    """
    N, L, D = b.shape
    h = torch.empty_like(b) if out is None else out
    n = L // chunk if chunk >= 2 else 0
    if n < 2:  # too short to chunk: the loop
        n = 0
    L0 = n * chunk
    last = h0  # the state before position L0 (None: zeros)
    Pp = None
    if n:
        C = chunk
        a4 = a[:, :L0].view(N, n, C, D)  # (N, n, C, D) views
        b4 = b[:, :L0].view(N, n, C, D)
        h4 = h[:, :L0].view(N, n, C, D)
        Xp = b.new_empty(N, n + 1, D)  # [h0, X_0, ..., X_{n-1}]
        E = Xp[:, 1:]  # (N, n, D): pass 1, zero carry
        torch.addcmul(b4[:, :, 1], a4[:, :, 1], b4[:, :, 0], out=E)
        for t in range(2, C):
            torch.addcmul(b4[:, :, t], a4[:, :, t], E, out=E)
        Pp = a.new_empty(N, n + 1, D)
        Pp[:, 0].zero_()
        torch.prod(a4, 2, out=Pp[:, 1:])  # (N, n, D): Π of the chunk's gates
        _solve_carry(Pp[:, 1:], E, h0)  # in place: E becomes X, the state at the end of each chunk
        if h0 is None:
            Xp[:, 0].zero_()
        else:
            Xp[:, 0] = h0
        H = Xp[:, :n]  # (N, n, D): the state entering each chunk
        torch.addcmul(b4[:, :, 0], a4[:, :, 0], H, out=h4[:, :, 0])  # pass 2
        for t in range(1, C):
            torch.addcmul(b4[:, :, t], a4[:, :, t], h4[:, :, t - 1], out=h4[:, :, t])
        last = Xp[:, n]
    for t in range(L0, L):  # the tail (or the whole sequence when it is short)
        if last is None:
            h[:, t] = b[:, t]
        else:
            torch.addcmul(b[:, t], a[:, t], last, out=h[:, t])
        last = h[:, t]
    return h, Pp


def _solve_carry(P: torch.Tensor, E: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """``X_c = P_c X_{c-1} + E_c``, ``X_{-1} = h0``, over ``n`` chunks, written over ``E``: a loop when
    short, else chunked."""
    n = E.shape[1]
    return _scan_forward(P, E, h0, _carry_chunk(n) if n > _SEQUENTIAL_MAX else 1, out=E)[0]  # chunk 1: the loop


def _scan_adjoint(a: torch.Tensor, y: torch.Tensor, chunk: int, Pp: torch.Tensor | None = None) -> torch.Tensor:
    """Solve ``x_t = y_t + a_{t+1} x_{t+1}`` backwards in time, ``x_{L-1} = y_{L-1}``; no autograd.

    ``x`` is written over ``y`` (each ``y_t`` is read for the last time just before). ``Pp``: the
    padded gate products returned by :func:`_scan_forward` for the same ``a`` and ``chunk`` (else
    computed).

    The reverse twin of :func:`_scan_forward` (same chunks, same Horner steps from each chunk's end,
    gate ``a_{t+1}`` read in place: no shifted or flipped full-size copy). Chunk ``c`` (positions
    ``cC … cC+C-1``) receives ``K_{c+1} = a_{(c+1)C} x_{(c+1)C}`` from its right. With ``E_c`` its first
    state for zero input from the right and ``P_c`` its gate product,

        K_c = a_{cC} x_{cC} = P_c K_{c+1} + a_{cC} E_c,

    a recurrence of the same reverse form over the chunks (gate ``P_c`` for ``K_c``: ``Pp[:, :n]``
    is that gate array, shifted by one as this function reads it), solved in place on the small
    ``(N, n, D)`` tensors by this function (recursively) or by a loop when short: no flipped copies.
    """
    N, L, D = y.shape
    x = y
    n = L // chunk if chunk >= 2 else 0
    if n < 2:
        n = 0
    L0 = n * chunk
    for t in range(L - 1, L0 - 1, -1):  # the tail first (or the whole sequence when it is short)
        if t < L - 1:
            torch.addcmul(y[:, t], a[:, t + 1], x[:, t + 1], out=x[:, t])
    if n:
        C = chunk
        a4 = a[:, :L0].view(N, n, C, D)  # (N, n, C, D) views
        y4 = y[:, :L0].view(N, n, C, D)
        x4 = x[:, :L0].view(N, n, C, D)
        if Pp is None:
            Pp = a.new_empty(N, n + 1, D)
            Pp[:, 0].zero_()
            torch.prod(a4, 2, out=Pp[:, 1:])
        Kp = y.new_empty(N, n + 1, D)  # [K_0, ..., K_{n-1}, K_n]: K_n from the tail (0 if none)
        E = Kp[:, :n]  # (N, n, D): pass 1, nothing from the right
        torch.addcmul(y4[:, :, C - 2], a4[:, :, C - 1], y4[:, :, C - 1], out=E)
        for t in range(C - 3, -1, -1):
            torch.addcmul(y4[:, :, t], a4[:, :, t + 1], E, out=E)
        E.mul_(a4[:, :, 0])  # F_c = a_{cC} E_c
        if L0 < L:
            torch.mul(a[:, L0], x[:, L0], out=Kp[:, n])  # K_n
            torch.addcmul(E[:, n - 1], Pp[:, n], Kp[:, n], out=E[:, n - 1])  # K_{n-1} = F_{n-1} + P_{n-1} K_n
        else:
            Kp[:, n].zero_()
        _scan_adjoint(Pp[:, :n], E, _carry_chunk(n) if n > _SEQUENTIAL_MAX else 1)  # in place: K_c
        torch.add(y4[:, :, C - 1], Kp[:, 1:], out=x4[:, :, C - 1])  # pass 2, from K_{c+1}
        for t in range(C - 2, -1, -1):
            torch.addcmul(y4[:, :, t], a4[:, :, t + 1], x4[:, :, t + 1], out=x4[:, :, t])
    return x


def _check_chunk(chunk: int) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 2:
        raise ValueError(f"chunk must be an int >= 2 (the chunk length C); got {chunk!r}")
    return chunk


class _LinearScan(torch.autograd.Function):
    """``h_t = a_t h_{t-1} + b_t`` by :func:`_scan_forward`; backward by the adjoint recurrence.

    With PyTorch's convention for complex gradients (``grad = ∂L/∂Re + i ∂L/∂Im``) and ``λ_t`` the
    total gradient reaching ``h_t`` (``g_t`` the one from the output):

        λ_t = g_t + conj(a_{t+1}) λ_{t+1},   λ_{L-1} = g_{L-1}
        ∂L/∂b_t = λ_t,   ∂L/∂a_t = λ_t conj(h_{t-1}),   ∂L/∂h0 = conj(a_0) λ_0.

    The reverse scan runs on ``ν = conj(λ)``, ``ν_t = conj(g_t) + a_{t+1} ν_{t+1}``, so that its gates
    are ``a`` itself (a conjugated view would be copied at every step).
    """

    @staticmethod
    def forward(ctx, a, b, h0, chunk):
        h, P = _scan_forward(a, b, h0, chunk)
        ctx.chunk = chunk
        ctx.save_for_backward(a, h, h0, P)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        a, h, h0, P = ctx.saved_tensors
        nu = _scan_adjoint(a, torch.conj_physical(gout), ctx.chunk, P)  # (N, L, D) = conj(λ)
        grad_a = grad_h0 = None
        if ctx.needs_input_grad[0]:
            grad_a = _times_previous_state(nu, h, h0).conj_physical_()  # λ conj(h_{t-1})
        if h0 is not None and ctx.needs_input_grad[2]:
            grad_h0 = (a[:, 0] * nu[:, 0]).conj_physical_()
        grad_b = nu.conj_physical_() if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, grad_h0, None


def _times_previous_state(nu: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """``ν_t h_{t-1}`` with ``h_{-1} = h0`` (zeros if None), without a shifted copy of ``h``.

    For contiguous ``(N, L, D)`` tensors ``h_{t-1}`` is ``h`` read ``D`` elements earlier, so the product
    is one multiply of two contiguous ranges (the fast elementwise path on a GPU); its ``N`` entries
    at ``t = 0`` (which read the previous row's last state) are then overwritten.
    """
    N, L, D = nu.shape
    q = torch.empty_like(nu)  # (N, L, D)
    if nu.is_contiguous() and h.is_contiguous() and q.is_contiguous():
        torch.mul(nu.view(-1)[D:], h.view(-1)[:-D], out=q.view(-1)[D:])
    else:
        torch.mul(nu[:, 1:], h[:, :-1], out=q[:, 1:])
    if h0 is None:
        q[:, 0] = 0
    else:
        torch.mul(nu[:, 0], h0, out=q[:, 0])
    return q


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, *, chunk: int = CHUNK) -> torch.Tensor:
    """Chunked solution of ``h_t = a_t h_{t-1} + b_t`` for complex ``a``, ``b`` of shape ``(B, L, D)``.

    Differentiable in ``a``, ``b`` and ``h0`` (first derivatives; no double backward). Exact at any
    length when ``|a_t| ≤ 1`` (see :func:`_scan_forward`).
    """
    return _LinearScan.apply(a.contiguous(), b.contiguous(), None if h0 is None else h0.to(b.dtype),
                             _check_chunk(chunk))


class _MIPTScan(torch.autograd.Function):
    """The MIPT recurrence from ``(p, θ, u, h0)``: gate, scan and their gradients in one function.

    Forward: ``a = (1 - p) e^{iθ}``, ``b = p u``, then :func:`_scan_forward`. Backward: with
    ``ν = conj(λ)`` from the adjoint scan (see :class:`_LinearScan`) and ``w_t = e^{iθ_t} ν_t h_{t-1}``,

        ∂L/∂p_t = Re(ν_t u_t) − Re(w_t),   ∂L/∂θ_t = −(1 − p_t) Im(w_t),
        ∂L/∂u_t = p_t conj(ν_t),            ∂L/∂h0 = conj(a_0 ν_0).

    Fewer full-size passes than autograd through the gate's PyTorch ops, and exact at ``p = 1``
    (no division by ``1 − p``).
    """

    @staticmethod
    def forward(ctx, p, theta, u, h0, chunk):
        real = u.real.dtype
        pr, th = p.to(real), theta.to(real)
        a = torch.polar(1 - pr, th).contiguous()  # (B, L, D) complex, |a| = 1 − p
        b = (pr * u).contiguous()  # (B, L, D) complex
        h, P = _scan_forward(a, b, h0, chunk)
        ctx.chunk = chunk
        ctx.dtypes = (p.dtype, theta.dtype)
        ctx.save_for_backward(pr, th, u, h0, a, h, P)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        pr, th, u, h0, a, h, P = ctx.saved_tensors
        need_p, need_th, need_u, need_h0 = ctx.needs_input_grad[:4]
        nu = _scan_adjoint(a, torch.conj_physical(gout), ctx.chunk, P)  # (B, L, D) = conj(λ)
        grad_p = grad_th = grad_u = grad_h0 = None
        if h0 is not None and need_h0:
            grad_h0 = (a[:, 0] * nu[:, 0]).conj_physical_()
        if need_p or need_th:
            w = _times_previous_state(nu, h, h0)  # ν_t h_{t-1}
            # times −e^{iθ} (polar with modulus −1): then both gradients below are one kernel each
            w.mul_(torch.polar(th.new_full((), -1.0).expand_as(th), th))  # −w_t
            if need_th:  # −(1 − p) Im(w) = Im(−w) − p Im(−w)
                grad_th = torch.addcmul(w.imag, w.imag, pr, value=-1).to(ctx.dtypes[1])
            if need_p:  # Re(ν u) + Re(−w)
                grad_p = torch.add((nu * u).real, w.real).to(ctx.dtypes[0])
            del w
        if need_u:
            grad_u = nu.mul_(pr).conj_physical_()  # p_t conj(ν_t), in ν's memory
        return grad_p, grad_th, grad_u, grad_h0, None


def scan_chunked(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None = None,
                 *, chunk: int = CHUNK) -> torch.Tensor:
    """Parallel, exact, pure-PyTorch form of the recurrence: Horner steps inside chunks of
    ``chunk`` tokens and a carry between chunks (see :func:`_scan_forward`)."""
    return _MIPTScan.apply(p, theta, u, None if h0 is None else h0.to(u.dtype), _check_chunk(chunk))
