"""The MIPT recurrence and the scans that compute it.

One layer of MIPT-SSM runs, independently for every channel ``d`` of a complex state,

    h_t = (1 - p_t) · e^{iθ_t} · h_{t-1}  +  p_t · u_t,        h_{-1} = h0 (zeros if None)

with a measurement rate ``p_t ∈ [0, 1]``, a real phase ``θ_t`` and a complex input ``u_t``. Written
as a first-order linear recurrence ``h_t = a_t h_{t-1} + b_t`` it has the *gate*
``a_t = (1 - p_t) e^{iθ_t}`` (``|a_t| ≤ 1``) and the *input* ``b_t = p_t u_t``.

Shapes (glossary in ``minimipt/__init__.py``): ``p``, ``theta``: real ``(B, L, D)``; ``u``: complex
``(B, L, D)``; ``h0``: complex ``(B, D)``; result: complex ``(B, L, D)``.

Methods (all compute the same function; tests compare values and gradients):

* ``"sequential"``: the reference loop, one step per token. It *is* the definition.
* ``"chunked"``: parallel and pure PyTorch (the default off CUDA). The sequence is cut into chunks
  of ``C`` tokens (``chunk=``, default :data:`CHUNK`). Inside a chunk, for the state ``H`` entering it,

      h_t = (Π_{k ≤ t} a_k) H + Σ_{j ≤ t} (Π_{j < k ≤ t} a_k) b_j,

  evaluated in Horner order, ``h_t = a_t h_{t-1} + b_t``: ``C`` fused multiply-adds, each over all
  chunks, batch rows and channels at once. A first pass gives every chunk's end state for
  ``H = 0`` and its gate product; the states entering the chunks then solve a recurrence of length
  ``L / C`` (the same method, recursively); a second pass writes ``h``. No product spans more than
  ``C`` gates and nothing is divided, so nothing underflows or divides by ~0 at any length, and the
  extra memory is a few tensors of the data's size. The backward pass is the adjoint recurrence
  ``λ_t = g_t + conj(a_{t+1}) λ_{t+1}``, the same two-pass scan run backwards in time (a custom
  autograd function that also differentiates the gate in closed form).

  Cost, in full-size passes (one read or write of a complex ``(B, L, D)`` tensor; a real one counts
  ½; counted per aten op at (B, D, L) = (32, 512, 8192), C = 16): forward ≈ 14.9: gate
  ``a = (1 − p) e^{iθ}`` 3 (``1 − p`` 1, polar 2), ``b = p u`` 2.5, pass 1 4 (reads ``a``, ``b``;
  the running state read and written ``C`` times), chunk products 1, pass 2 4 (reads ``a``, ``b``,
  ``h_{t-1}``, writes ``h``), carries 0.4. Backward ≈ 30.0: ``conj(∂L/∂h)`` 2, the adjoint's two
  passes 8, ``ν_t h_{t-1}`` 3, ``−e^{iθ}`` 1.5 and the product 3, ``∂L/∂θ`` 2, ``∂L/∂p`` 5.5,
  ``∂L/∂u = p conj(ν)`` 4.5, carries 0.5. Total ≈ 44.9 (45.7 before the carries were made
  copy-free). Each elementwise PyTorch op writes one tensor, so the two conjugations (2 each) and
  the complex temporaries of ``∂L/∂p`` cannot be fused away without a custom kernel.
* ``"closed_form"``: the same two levels, with each chunk's closed form

      h_j = A_j h_in + Σ_{s ≤ j} exp(Σ_{r=s+1}^{j} log a_r) · b_s,     A_j = exp(Σ_{r ≤ j} log a_r)

  evaluated as a ``C × C`` matrix per channel (``C`` = :data:`CHUNK_SIZE`); the sums of logs in the
  exponent come from a masked cumulative sum, never as a difference of two large cumulative sums,
  so no cancellation and no division occurs. The teaching version (notebook 05): exact and
  stable, but it moves ~C× the data's bytes.
* more methods (a fast GPU kernel) register themselves with :func:`register_scan_method`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = [
    "mipt_scan",
    "linear_scan",
    "scan_sequential",
    "scan_chunked",
    "scan_closed_form",
    "register_scan_method",
    "scan_methods",
    "resolve_method",
    "check_scan_inputs",
    "is_pairs",
    "pairs_to_complex",
]

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


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------

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


def _gate_and_input(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor):
    """``a = (1 - p) e^{iθ}`` and ``b = p u`` in the complex dtype of ``u`` (p, θ cast to its real dtype)."""
    real = u.real.dtype
    p, theta = p.to(real), theta.to(real)
    # (1 − p)·e^{iθ} as a product, not torch.polar(1 − p, θ): polar's backward loses ∂a/∂p where
    # its modulus is exactly 0 (p = 1), and p = 1 is a legal input
    a = (1 - p) * torch.polar(torch.ones_like(theta), theta)  # (B, L, D) complex, |a| = 1 − p ≤ 1
    b = p * u  # (B, L, D) complex
    return a, b


# ----------------------------------------------------------------------------------------------
# "sequential": the definition
# ----------------------------------------------------------------------------------------------

def scan_sequential(p: torch.Tensor, theta: torch.Tensor, u: torch.Tensor,
                    h0: torch.Tensor | None = None) -> torch.Tensor:
    """Reference loop: ``h_t = (1 - p_t) e^{iθ_t} h_{t-1} + p_t u_t``, one token at a time."""
    a, b = _gate_and_input(p, theta, u)
    B, L, D = b.shape
    h = torch.zeros(B, D, dtype=b.dtype, device=b.device) if h0 is None else h0.to(b.dtype)
    out = []
    for t in range(L):
        h = a[:, t] * h + b[:, t]  # (B, D)
        out.append(h)
    return torch.stack(out, dim=1)  # (B, L, D)


# ----------------------------------------------------------------------------------------------
# "chunked": Horner order inside chunks, a carry between them
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# "closed_form": the same two levels with a C×C matrix per chunk (the teaching version)
# ----------------------------------------------------------------------------------------------

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
    a, b = _gate_and_input(p, theta, u)
    return linear_scan_closed_form(a, b, h0)


register_scan_method("sequential", scan_sequential, priority=0)
register_scan_method("chunked", scan_chunked, priority=10)
register_scan_method("closed_form", scan_closed_form, priority=5)


# ----------------------------------------------------------------------------------------------
# the public entry point
# ----------------------------------------------------------------------------------------------

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
