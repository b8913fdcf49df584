"""The wave phase: a D-channel phase (holographic) memory and its readouts (notebook ``02_wave_phase``).

``N`` items ``v_n`` are superposed with random unit-phase keys ``k_n ∈ C^D`` in one state,
``h = Σ_n v_n k_n = K^T v``, and read back by one of three decoders:

* ``"matched"``: undo the key and average the channels (what a recurrence does cheaply);
* ``"complex_linear"``: the best complex-linear decoder (least squares / minimum norm on ``h = K^T v``),
  exact while ``N ≤ D``: ``D`` complex numbers hold at most ``D`` independent complex unknowns;
* ``"real_linear"``: the best real-linear decoder of ``[Re h, Im h]`` (``2D`` real numbers). For real items
  it is exact while ``N ≤ 2D``; for complex items it is the complex-linear decoder again.

Items are ``"real"`` (bits ``±1``) or ``"complex"`` (``(±1 ± i)/√2``, two bits each, ``|v| = 1``).

Glossary: ``B`` trials, ``N`` items, ``D`` channels, ``L`` sequence length.
"""

from __future__ import annotations

import math

import torch

from ._util import generator, nonneg, phi, pos_int, random_bits, unit_phases

__all__ = [
    "DECODERS",
    "ITEMS",
    "random_phase_keys",
    "scan_phase_keys",
    "phase_memory_store",
    "phase_memory_retrieve",
    "phase_memory_accuracy",
    "phase_memory_theory",
]

DECODERS = ("matched", "complex_linear", "real_linear")
ITEMS = ("real", "complex")


def _choice(name: str, value: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def random_phase_keys(N: int, D: int, trials: int | None = None, seed: int = 0) -> torch.Tensor:
    """Random unit-phase keys ``k_{n,d} = e^{iφ_{n,d}}``, ``φ`` uniform: shape ``(N, D)`` or ``(B, N, D)``."""
    N, D = pos_int("N", N), pos_int("D", D)
    shape = (N, D) if trials is None else (pos_int("trials", trials), N, D)
    return unit_phases(shape, generator(seed))


def scan_phase_keys(theta: torch.Tensor) -> torch.Tensor:
    """The keys that the pure rotation ``h_t = e^{iθ_t} h_{t-1} + u_t`` gives each position.

    ``h_L = Σ_t key_t u_t`` with ``key_t = exp(i Σ_{s=t+1}^{L} θ_s)``: every later step rotates what was
    written at ``t``. ``theta``: real ``(..., L, D)``; result complex ``(..., L, D)``.
    """
    theta = torch.as_tensor(theta)
    if theta.is_complex() or theta.dim() < 2:
        raise ValueError(f"theta must be a real tensor of shape (..., L, D), got {theta.dtype} {tuple(theta.shape)}")
    total = theta.sum(-2, keepdim=True)  # (..., 1, D)
    after = total - theta.cumsum(-2)  # (..., L, D): sum over s > t
    return torch.polar(torch.ones_like(after), after)


def phase_memory_store(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Superpose ``N`` items in one state: ``h_d = Σ_n v_n k_{n,d}``.

    ``keys``: complex ``(..., N, D)``; ``values``: ``(..., N)`` (real or complex). Returns ``(..., D)``.
    """
    keys, values = torch.as_tensor(keys), torch.as_tensor(values)
    if not keys.is_complex() or keys.dim() < 2:
        raise ValueError(f"keys must be a complex tensor of shape (..., N, D), got {keys.dtype} {tuple(keys.shape)}")
    if values.shape != keys.shape[:-1]:
        raise ValueError(f"values must have shape keys.shape[:-1] = {tuple(keys.shape[:-1])}, got {tuple(values.shape)}")
    return (values.to(keys.dtype).unsqueeze(-1) * keys).sum(-2)  # (..., D)


def _least_squares(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The least-squares solution of ``A x = b`` when ``A`` (``(..., r, n)``) has at least as many rows
    as columns, else the minimum-norm one (real or complex)."""
    r, n = A.shape[-2], A.shape[-1]
    if n <= r:  # (A^H A) x = A^H b
        return torch.linalg.solve(A.mH @ A, A.mH @ b)
    return A.mH @ torch.linalg.solve(A @ A.mH, b)  # x = A^H (A A^H)^{-1} b


def phase_memory_retrieve(h: torch.Tensor, keys: torch.Tensor, decoder: str = "matched",
                          items: str = "real") -> torch.Tensor:
    """Read every item back from the state ``h`` (``(..., D)``) with its key (``keys``: ``(..., N, D)``).

    * ``"matched"``: ``v̂_n = (1/D) Σ_d conj(k_{n,d}) h_d = v_n + crosstalk`` (crosstalk variance ``(N−1)/D``);
    * ``"complex_linear"``: ``v̂ = K^{T+} h``, the least-squares (``N ≤ D``) or minimum-norm (``N > D``)
      solution of ``K^T v = h`` over complex ``v``;
    * ``"real_linear"``: the same over real unknowns, from the ``2D`` real numbers ``[Re h, Im h]``:
      ``[Re h; Im h] = [Re K^T; Im K^T] v`` for real items, and the real form of ``K^T`` acting on
      ``[Re v; Im v]`` for complex ones.

    ``items`` matters only to ``"real_linear"``. Returns complex ``(..., N)`` (real-valued for
    ``"real_linear"`` with real items).
    """
    h, keys = torch.as_tensor(h), torch.as_tensor(keys)
    _choice("decoder", decoder, DECODERS)
    _choice("items", items, ITEMS)
    if keys.dim() < 2 or h.shape[-1] != keys.shape[-1] or h.shape[:-1] != keys.shape[:-2]:
        raise ValueError(f"h (..., D) and keys (..., N, D) disagree: {tuple(h.shape)} vs {tuple(keys.shape)}")
    h = h.to(keys.dtype)
    if decoder == "matched":
        return (keys.conj() * h.unsqueeze(-2)).mean(-1)  # (..., N)
    Kt = keys.transpose(-1, -2).to(torch.complex128)  # (..., D, N): h = K^T v
    y = h.to(torch.complex128).unsqueeze(-1)  # (..., D, 1)
    if decoder == "complex_linear":
        return _least_squares(Kt, y).squeeze(-1).to(keys.dtype)
    re, im = Kt.real, Kt.imag  # (..., D, N) each
    if items == "real":
        X = torch.cat([re, im], -2)  # (..., 2D, N)
    else:  # h = (re + i im)(x + i w) = (re x - im w) + i (im x + re w)
        X = torch.cat([torch.cat([re, -im], -1), torch.cat([im, re], -1)], -2)  # (..., 2D, 2N)
    x = _least_squares(X, torch.cat([y.real, y.imag], -2)).squeeze(-1)  # (..., N) or (..., 2N)
    N = keys.shape[-2]
    v = torch.complex(x, torch.zeros_like(x)) if items == "real" else torch.complex(x[..., :N], x[..., N:])
    return v.to(keys.dtype)


def phase_memory_accuracy(D: int, N: int, noise: float = 0.0, trials: int = 64, seed: int = 0,
                          decoder: str = "matched", items: str = "real") -> dict:
    """Measure a phase memory: store ``N`` random items in ``D`` channels, read them back.

    ``h = Σ_n v_n k_n + n``, random unit-phase keys, channel noise ``n_d`` complex Gaussian with
    ``E|n_d|² = noise²`` (each item's signal per channel has magnitude 1). Returns the means over
    ``trials`` of

    * ``"accuracy"``: fraction of bits read correctly (real items: ``sign Re v̂_n = v_n``; complex items:
      the signs of the real and of the imaginary part; chance 0.5);
    * ``"quality"``: squared cosine ``|<v̂, v>|² / (‖v̂‖² ‖v‖²)`` in ``[0, 1]``.
    """
    D, N, trials = pos_int("D", D), pos_int("N", N), pos_int("trials", trials)
    noise = nonneg("noise", noise)
    _choice("decoder", decoder, DECODERS)
    _choice("items", items, ITEMS)
    g = generator(seed)
    keys = unit_phases((trials, N, D), g)  # (B, N, D)
    v = random_bits((trials, N), g)  # (B, N)
    if items == "complex":
        v = torch.complex(v, random_bits((trials, N), g)) / math.sqrt(2)
    eps = torch.complex(torch.randn(trials, D, generator=g), torch.randn(trials, D, generator=g))
    h = phase_memory_store(keys, v) + noise / math.sqrt(2) * eps  # (B, D)
    v_hat = phase_memory_retrieve(h, keys, decoder, items)  # (B, N)
    if items == "real":
        accuracy = (torch.sign(v_hat.real) == v).float().mean()
    else:
        accuracy = 0.5 * ((torch.sign(v_hat.real) == torch.sign(v.real)).float().mean()
                          + (torch.sign(v_hat.imag) == torch.sign(v.imag)).float().mean())
    v_c = v.to(v_hat.dtype)
    inner = (v_hat.conj() * v_c).sum(-1).abs() ** 2
    quality = inner / ((v_hat.abs() ** 2).sum(-1) * (v_c.abs() ** 2).sum(-1)).clamp_min(1e-30)
    return {"accuracy": float(accuracy), "quality": float(quality.mean())}


def phase_memory_theory(D: float, N: float, noise: float = 0.0, decoder: str = "matched",
                        items: str = "real") -> dict:
    """Predicted ``{"accuracy", "quality"}`` of :func:`phase_memory_accuracy` (large-D approximations).

    Every item has ``|v| = 1``; a real item is one bit of amplitude 1, a complex item two bits of
    amplitude ``1/√2``. Of a complex error of variance ``e`` with random phase, each real component
    gets ``e/2``.

    **Matched**: ``v̂_n = v_n + c_n`` with ``E|c_n|² = (N − 1 + σ²)/D``, so ``SNR = D/(N − 1 + σ²)``,
    ``quality = SNR/(1 + SNR)``; bit accuracy ``Φ(√(2 SNR))`` (real items), ``Φ(√SNR)`` (complex items).

    **Complex-linear** (real or complex items alike; ``r = D/N``): for ``N < D`` the noise is amplified by
    the complex Wishart mean ``E (K^* K^T)^{-1} = I/(D − N)``: per-item error ``e = σ²/(D − N)``,
    ``quality = (D − N)/(D − N + σ²)``. For ``N > D`` only the projection on a D-dimensional subspace
    survives, ``v̂_n = r v_n + crosstalk`` with variance ``r(1 − r) + σ² r/(N − D)``,
    ``quality = D(N − D)/(N(N − D + σ²))``. Without noise: exact up to ``N = D``, a kink at N/D = 1.

    **Real-linear**, real items (``ρ = 2D/N``): the same with ``2D`` real equations and real Wishart
    means (``E (X^T X)^{-1} = 2I/(2D − N − 1)``): for ``N < 2D − 1`` the per-item error is
    ``σ²/(2D − N − 1)``, for ``N > 2D + 1`` the kept fraction is ``ρ`` with crosstalk ``ρ(1 − ρ)`` and
    noise ``σ² ρ/(N − 2D − 1)``. Without noise: exact up to ``N = 2D``, a kink at N/D = 2. For complex
    items the real-linear decoder *is* the complex-linear one (same formulas).

    The noisy formulas diverge where the key matrix is square; that point raises ``ValueError``.
    """
    D, N = float(D), float(N)
    if not (D >= 1 and N >= 1):
        raise ValueError(f"D and N must be >= 1, got D={D}, N={N}")
    noise = nonneg("noise", noise)
    _choice("decoder", decoder, DECODERS)
    _choice("items", items, ITEMS)
    n2 = noise ** 2
    signal2 = 1.0 if items == "real" else 0.5  # squared amplitude of one bit
    share = 0.5  # a complex error of random phase puts half its variance in each component
    if decoder == "matched":
        snr = D / max(N - 1 + n2, 1e-300)
        z = math.sqrt(signal2 / (share / snr)) if math.isfinite(snr) else math.inf
        return {"accuracy": float(phi(z)), "quality": snr / (1 + snr) if math.isfinite(snr) else 1.0}
    if decoder == "real_linear" and items == "real":
        slots, offset, share = 2 * D, 1.0, 1.0  # real unknowns and real errors: all variance in the component
    else:
        slots, offset = D, 0.0
    if n2 == 0:
        if N <= slots:
            return {"accuracy": 1.0, "quality": 1.0}
        ratio = slots / N  # v̂_n = ratio v_n + crosstalk of variance ratio (1 − ratio)
        z = ratio * math.sqrt(signal2) / math.sqrt(share * ratio * (1 - ratio))
        return {"accuracy": float(phi(z)), "quality": ratio}
    if abs(N - slots) <= offset or N == slots:
        raise ValueError(f"the {decoder} prediction diverges at N = {slots:g} with noise > 0; evaluate it off that point")
    gap = abs(N - slots) - offset  # the Wishart denominator
    if N < slots:
        e = n2 / gap  # per-item error variance
        return {"accuracy": float(phi(math.sqrt(signal2 / (share * e)))), "quality": gap / (gap + n2)}
    ratio = slots / N
    var = ratio * (1 - ratio) + n2 * ratio / gap
    return {"accuracy": float(phi(ratio * math.sqrt(signal2) / math.sqrt(share * var))),
            "quality": slots * gap / (N * (gap + n2))}
