"""The MIPT layer: measurement gate, phase, complex input, scan, readout — and its O(1) step.

For an input ``x̂`` of shape ``(B, L, d)`` (the block's pre-LayerNorm'd input: the norm belongs to
:class:`~minimipt.blocks.MIPTBlock`, which feeds the same ``x̂`` to the cache) the layer computes, per
token t and state channel d (``D`` channels; ``D = d`` for the paper's ``Re(h)`` readout):

    z_t = W_p x̂_t + b_p,        p_t = σ(z_t)              measurement rate, (0, 1)
    θ_t = W_θ x̂_t + b_θ          (phase="input", the paper)   or  θ_t = θ  (phase="static", HGRN-like)
    u_t = W_r x̂_t + i · W_i x̂_t                            complex input
    h_t = (1 − p_t) e^{iθ_t} h_{t−1} + p_t u_t             minimipt.mipt_scan
    y_t = Re(h_t)                (readout="real", the paper)  or  y_t = W_o [Re h_t, Im h_t] + b_o

The four input projections are one fused ``nn.Linear`` (``in_proj``) whose output is split in this
order: ``[z | θ | u_re | u_im]`` (``θ`` is absent when ``phase="static"``). All parameters are real
tensors; the complex numbers exist only inside ``forward``. ``log p_t`` and ``log(1 − p_t)`` are
available through :meth:`MIPTLayer.gates` computed with ``logsigmoid`` (never ``log(sigmoid)``).
With ``fused_mixer=True`` the training forward under bf16/fp16 autocast computes ``p``, the scan and
``Re h`` in one Triton kernel from the projection output (:mod:`minimipt.ops.triton.mixer`): the
same function, less memory kept for backward.
The layer adds neither the norm nor the residual: :class:`~minimipt.blocks.MIPTBlock` does
``x + layer(LN(x))``. ``forward(x̂, h0)`` continues from a state ``h0`` and its aux output holds every
``h_t`` (the last one is the state after the sequence); ``step`` is the same recurrence one token at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import gate_and_input, mipt_scan, resolve_method, scan_methods

__all__ = ["MIPTLayer", "LayerAux"]

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _wide(t: torch.Tensor) -> torch.Tensor:
    """float32 for a bf16/fp16 tensor (each piece cast on its own: a cast of the whole projection
    would stay alive for backward through the views); float32/float64 unchanged."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class _LogSigmoid(torch.autograd.Function):
    """``log σ(z)`` (``F.logsigmoid``) that keeps its output, not ``z``, for the backward pass:
    ``d log σ(z) / dz = 1 − σ(z) = −expm1(log σ(z))``, accurate for every z (also where σ(z) → 1,
    where ``log σ(z) ≈ −e^{−z}`` still holds every digit). The cache's write score, a logsumexp of
    ``log p`` over the channels, keeps the same tensor for its own backward, so the two share one
    ``(B, L, D)`` tensor instead of keeping ``z`` and ``log p``."""

    @staticmethod
    def forward(ctx, z):
        log_p = F.logsigmoid(z)
        ctx.save_for_backward(log_p)
        return log_p

    @staticmethod
    def backward(ctx, grad):
        (log_p,) = ctx.saved_tensors
        return -grad * torch.expm1(log_p)


@dataclass
class LayerAux:
    """What the layer computed besides its output (for the cache, entropy plots and tests)."""

    p: torch.Tensor        # (B, L, D) measurement rate
    log_p: torch.Tensor    # (B, L, D) log p, by logsigmoid (forward keeps only it for its backward)
    theta: torch.Tensor    # (B, L, D) phase
    h: torch.Tensor        # (B, L, D) complex state


class MIPTLayer(nn.Module):
    """One MIPT-SSM mixing layer (gate/phase/input → complex scan → readout) of a normalised input.

    Args:
        d_model: width ``d`` of the input and output.
        d_state: complex state channels ``D``; defaults to ``d_model`` (required for ``readout="real"``).
        phase: ``"input"`` (θ depends on the token, as the paper) or ``"static"`` (a learned
            per-channel constant, as HGRN).
        readout: ``"real"`` (``y = Re h``, as the paper) or ``"proj"`` (a linear map of ``[Re h, Im h]``).
        scan_method: passed to :func:`minimipt.mipt_scan` (``"auto"`` picks the fastest correct one).
        p_init: range of the initial measurement rate ``σ(b_p)`` (log-uniform per channel); small
            values start the layer in the long-memory wave phase.
        theta_init: the initial phases ``b_θ`` are uniform in ``[-theta_init, theta_init]`` radians.
        fused_mixer: opt in to the fused Triton mixer (:func:`minimipt.ops.triton.mixer.mixer_triton`)
            for ``forward`` when the projection output is bf16/fp16 (autocast), ``readout="real"``,
            ``phase="input"``, ``scan_method`` is ``"auto"`` or ``"triton"``, ``return_aux`` is False
            and the mixer is available on the device (:func:`minimipt.ops.triton.mixer_available`: method
            ``"triton"`` available and the mixer's own first-use self-check passed); otherwise the
            split path is used.
    """

    def __init__(self, d_model: int, d_state: int | None = None, *, phase: str = "input",
                 readout: str = "real", scan_method: str = "auto",
                 p_init: tuple[float, float] = (1e-3, 0.1), theta_init: float = math.pi / 2,
                 fused_mixer: bool = False):
        super().__init__()
        if not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        d_state = d_model if d_state is None else d_state
        if not isinstance(d_state, int) or d_state <= 0:
            raise ValueError(f"d_state must be a positive int, got {d_state!r}")
        if phase not in ("input", "static"):
            raise ValueError(f"phase must be 'input' (paper) or 'static' (HGRN-like), got {phase!r}")
        if readout not in ("real", "proj"):
            raise ValueError(f"readout must be 'real' (paper) or 'proj', got {readout!r}")
        if readout == "real" and d_state != d_model:
            raise ValueError(f"readout='real' returns Re(h) directly, so d_state ({d_state}) must equal "
                             f"d_model ({d_model}); use readout='proj' for another state size")
        lo, hi = p_init
        if not 0 < lo <= hi < 1:
            raise ValueError(f"p_init must satisfy 0 < low <= high < 1, got {p_init}")
        if scan_method != "auto" and scan_method not in scan_methods():
            resolve_method(scan_method, torch.device("cpu"))  # raises the informative error
        self.d_model, self.d_state = d_model, d_state
        self.phase, self.readout, self.scan_method = phase, readout, scan_method
        self.fused_mixer = bool(fused_mixer)
        D = d_state
        n_out = 4 * D if phase == "input" else 3 * D
        self.in_proj = nn.Linear(d_model, n_out)  # [z | θ | u_re | u_im]
        if phase == "static":
            self.theta = nn.Parameter(torch.empty(D))  # (D,)
        self.out_proj = nn.Linear(2 * D, d_model) if readout == "proj" else None
        self._p_init, self._theta_init = (lo, hi), theta_init
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        D = self.d_state
        nn.init.xavier_uniform_(self.in_proj.weight)
        bias = self.in_proj.bias
        bias.zero_()
        lo, hi = self._p_init
        p0 = torch.exp(torch.empty(D).uniform_(math.log(lo), math.log(hi)))  # log-uniform rates
        bias[:D] = torch.log(p0) - torch.log1p(-p0)  # logit(p0)
        # the gate and phase rows start small so that the biases set the initial regime
        self.in_proj.weight[:D].mul_(0.1)
        if self.phase == "input":
            bias[D:2 * D].uniform_(-self._theta_init, self._theta_init)
            self.in_proj.weight[D:2 * D].mul_(0.1)
        else:
            self.theta.uniform_(-self._theta_init, self._theta_init)
        if self.out_proj is not None:
            self.out_proj.reset_parameters()

    # ------------------------------------------------------------------------------------------
    def _split(self, x: torch.Tensor):
        """The fused projection of ``x`` split into ``(z, θ, u_re, u_im)``, each ``(..., D)``,
        in the projection's dtype (bf16 under autocast); a static ``θ`` is broadcast."""
        return self._split_out(self.in_proj(x))

    def _split_out(self, out: torch.Tensor):
        """``(z, θ, u_re, u_im)`` of the projection output ``out`` ``(..., 4D)`` (``(..., 3D)`` static)."""
        D = self.d_state
        if self.phase == "input":
            z, theta, u_re, u_im = out.split(D, dim=-1)
        else:
            z, u_re, u_im = out.split(D, dim=-1)
            theta = self.theta.expand_as(z)
        return z, theta, u_re, u_im

    def projections(self, x: torch.Tensor):
        """Split the fused projection of ``x`` into ``(z, θ, u)``.

        ``x``: ``(..., d)``; returns ``z``, ``θ`` real ``(..., D)`` and ``u`` complex ``(..., D)``,
        in float32 (or float64) even under autocast: the recurrence always runs in full precision.
        """
        z, theta, u_re, u_im = self._split(x)
        z, theta, u_re, u_im = (_wide(t) for t in (z, theta, u_re, u_im))
        return z, theta.to(z.dtype), torch.complex(u_re, u_im)

    @staticmethod
    def gates(z: torch.Tensor):
        """``(p, log p, log(1 − p))`` from the gate logits ``z``: ``p = σ(z)``, and the logs via
        logsigmoid (``log p = −softplus(−z)``, never ``log(σ(z))``, which is −inf once σ underflows)."""
        return torch.sigmoid(z), F.logsigmoid(z), F.logsigmoid(-z)

    def read(self, h: torch.Tensor) -> torch.Tensor:
        """Readout of a complex state ``(..., D)`` to ``(..., d)``."""
        if self.out_proj is None:
            return h.real
        return self.out_proj(torch.cat([h.real, h.imag], dim=-1))

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, return_aux: bool = False):
        """``x``: ``(B, L, d)`` → ``y``: ``(B, L, d)`` (and :class:`LayerAux` if ``return_aux``)."""
        self._check_input(x, 3, "(B, L, d_model)")
        out = self.in_proj(x)  # (B, L, 4D) [z | θ | u_re | u_im], bf16 under autocast
        if not return_aux and self._use_fused(out):
            from .ops.triton.mixer import mixer_triton  # imports Triton: only here

            return mixer_triton(out, h0).to(x.dtype)  # (B, L, d): Re h, p = σ(z) inside the kernel
        z, theta, u_re, u_im = self._split_out(out)  # (B, L, D) each, bf16 under autocast
        z = _wide(z)
        p = torch.sigmoid(z)  # (B, L, D) float32: autograd keeps only p for the gate's backward
        if u_re.dtype in (torch.float32, torch.float64):
            u = torch.complex(u_re, u_im)  # (B, L, D)
        else:
            # autocast: θ and u are bf16 values already; keep them narrow as (re, im) pairs. The Triton
            # kernel reads them so (float32 state), mipt_scan widens them for the other methods
            u = torch.stack((u_re, u_im), dim=-1)  # (B, L, D, 2)
        # p comes from a sigmoid: skip the value checks (they would wait for the device every call)
        h = mipt_scan(p, theta, u, h0, method=self.scan_method, check_values=False)  # (B, L, D) complex
        y = self.read(h).to(x.dtype)  # (B, L, d)
        if return_aux:
            return y, LayerAux(p=p, log_p=_LogSigmoid.apply(z), theta=_wide(theta), h=h)
        return y

    def _use_fused(self, out: torch.Tensor) -> bool:
        """Whether ``forward`` takes the fused mixer for the projection output ``out``."""
        if not (self.fused_mixer and out.dtype in (torch.bfloat16, torch.float16) and self.readout == "real"
                and self.phase == "input" and self.scan_method in ("auto", "triton")):
            return False
        from .ops import triton as kernels  # attribute lookup at call time (tests replace mixer_available)

        return kernels.mixer_available(out.device)  # "triton" available and the mixer's self-check passed

    # ------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
        """The state before any token: complex zeros ``(B, D)``."""
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        ref = self.in_proj.weight
        real = dtype or (ref.dtype if ref.dtype in _COMPLEX else torch.float32)
        return torch.zeros(batch_size, self.d_state, dtype=_COMPLEX[real], device=device or ref.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor, return_aux: bool = False):
        """One token: ``x_t`` ``(B, d)`` and state ``(B, D)`` → ``(y_t (B, d), new state (B, D))``.

        Memory and time per token are O(1) in the number of tokens already seen.
        """
        self._check_input(x_t, 2, "(B, d_model)")
        if not isinstance(state, torch.Tensor) or not state.is_complex() or \
                tuple(state.shape) != (x_t.shape[0], self.d_state):
            got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
            raise ValueError(f"state must be a complex tensor of shape (B, D) = {(x_t.shape[0], self.d_state)} "
                             f"from layer.init_state(B); got {got}")
        z, theta, u = self.projections(x_t)  # (B, D)
        p, log_p = torch.sigmoid(z), F.logsigmoid(z)  # as gates(z), without the unused log(1 − p)
        a, b = gate_and_input(p, theta, u.to(state.dtype))  # the scan's own gate and input, one token
        h = a * state + b
        y = self.read(h).to(x_t.dtype)
        if return_aux:
            return y, h, LayerAux(p=p, log_p=log_p, theta=theta, h=h)
        return y, h

    def _check_input(self, x: torch.Tensor, ndim: int, shape: str) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != ndim or x.shape[-1] != self.d_model:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"input must have shape {shape} with d_model={self.d_model}; got {got}")
        if not x.is_floating_point():
            raise ValueError(f"input must be a real floating tensor, got dtype {x.dtype}")
        if ndim == 3 and x.shape[1] == 0:
            raise ValueError(f"input sequence is empty: shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, phase={self.phase!r}, "
                f"readout={self.readout!r}, scan_method={self.scan_method!r}"
                + (", fused_mixer=True" if self.fused_mixer else ""))
