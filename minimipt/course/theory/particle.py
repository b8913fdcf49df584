"""The particle phase: the measurement gate, who is in the state, and entropy proxies (notebook ``03_particle_phase``).

Unrolling ``h_t = (1 - p_t) e^{iθ_t} h_{t-1} + p_t u_t`` (``h_0 = 0``) gives ``h_L = Σ_s w_s e^{iΦ_s} u_s`` with
contribution weights ``w_s = p_s Π_{r > s} (1 - p_r)``; for a constant gate ``w = p (1 - p)^k`` at age ``k``.
Two normalised entropies measure how spread the state is (over time contributions, over channels), and
:func:`recall_phase_diagram` maps recall from one state over ``(p, N/D)``.

Glossary: ``B`` trials, ``L`` length, ``D`` channels, ``N`` stored items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._util import generator, phi, pos_int, probability_grid, random_bits, scan, unit_phases
from .wave import phase_memory_retrieve, scan_phase_keys

__all__ = [
    "contribution_weights",
    "contribution_entropy",
    "geometric_entropy",
    "state_entropy",
    "sparse_tokens",
    "entropy_vs_p",
    "recall_phase_diagram",
]


def contribution_weights(p, L: int | None = None) -> torch.Tensor:
    """Weight of each input ``u_s`` in the final state ``h_L`` (with ``h_0 = 0``), oldest first.

    Unrolling ``h_t = (1 - p_t) e^{i theta_t} h_{t-1} + p_t u_t`` gives
    ``h_L = sum_s w_s e^{i phase_s} u_s`` with ``w_s = p_s prod_{r > s} (1 - p_r)``; for a constant
    ``p`` that is ``w_s = p (1 - p)^{L - s}`` for ``s = 1..L``, i.e. ``p (1 - p)^k`` at age ``k``.

    ``p``: a number (then ``L`` is required) or a tensor ``(..., L)`` of gate values in ``[0, 1]``.
    Returns float64 ``(..., L)``.
    """
    if isinstance(p, (int, float)):
        if L is None:
            raise ValueError("contribution_weights: a constant p needs the sequence length L")
        p_t = torch.full((pos_int("L", L),), float(p), dtype=torch.float64)
    else:
        p_t = torch.as_tensor(p, dtype=torch.float64)
        if p_t.dim() == 0 or p_t.shape[-1] == 0:
            raise ValueError(f"p must be a number or a tensor (..., L), got shape {tuple(p_t.shape)}")
        if L is not None and L != p_t.shape[-1]:
            raise ValueError(f"L={L} disagrees with p.shape[-1]={p_t.shape[-1]}")
    if not bool(((p_t >= 0) & (p_t <= 1)).all()):
        raise ValueError("p must lie in [0, 1]")
    keep = 1 - p_t
    # prod_{r > s} (1 - p_r): reversed cumulative product, shifted by one
    after = torch.flip(torch.cumprod(torch.flip(keep, [-1]), -1), [-1])  # prod_{r >= s}
    after = torch.cat([after[..., 1:], torch.ones_like(after[..., :1])], -1)  # prod_{r > s}
    return p_t * after


def _normalised_entropy(w: torch.Tensor, what: str) -> torch.Tensor:
    """``H(w / sum w) / log n`` over the last dim, with ``0 log 0 = 0``."""
    n = w.shape[-1]
    if n < 2:
        raise ValueError(f"{what}: a normalised entropy needs at least 2 entries, got {n}")
    total = w.sum(-1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError(f"{what}: a distribution is all zero (an all-zero state has no entropy); check the input")
    q = w / total
    h = -torch.where(q > 0, q * torch.log(q), torch.zeros_like(q)).sum(-1)
    return h / math.log(n) + 0.0  # + 0.0 turns -0.0 into 0.0


def contribution_entropy(p, L: int | None = None) -> torch.Tensor:
    """Normalised Shannon entropy, in [0, 1], of the time contributions ``w_s / sum w`` (see
    :func:`contribution_weights`): 1 when all ``L`` past tokens weigh the same (``p -> 0``,
    "volume-law-like"), 0 when only the current token counts (``p = 1``, "area-law-like")."""
    w = contribution_weights(p, L)
    return _normalised_entropy(w, "contribution_entropy")


def geometric_entropy(p: float) -> float:
    """Entropy in nats of the age distribution ``q_k = p (1 - p)^k``, ``k = 0, 1, …`` (a constant gate,
    infinitely many tokens): ``H(p) = (−p ln p − (1 − p) ln(1 − p)) / p = ln(1/p) + 1 − p/2 + O(p²)``.

    For ``L ≫ 1/p`` the time entropy is ``contribution_entropy(p, L) ≈ H(p) / ln L``: it depends on ``p``
    through ``ln(1/p)`` and on ``L`` through ``ln L``, not on ``pL`` alone.
    """
    p = float(p)
    if not 0 < p <= 1:
        raise ValueError(f"p must lie in (0, 1], got {p}")
    if p == 1:
        return 0.0
    return (-p * math.log(p) - (1 - p) * math.log1p(-p)) / p


def state_entropy(h: torch.Tensor) -> torch.Tensor:
    """Normalised Shannon entropy of a state over its channels: ``H(q) / log D``, ``q_d = |h_d|^2 / ||h||^2``.

    ``h``: ``(..., D)`` (complex or real), ``D >= 2``; returns ``(...)`` in ``[0, 1]``: 0 for a state
    on one channel, 1 for equal magnitude on all channels. Raises ValueError for an all-zero state.
    """
    h = torch.as_tensor(h)
    if h.dim() == 0:
        raise ValueError("h must have a channel dimension (..., D)")
    return _normalised_entropy(h.abs().to(torch.float64) ** 2, "state_entropy")


def sparse_tokens(B: int, L: int, D: int, active: int, seed: int = 0) -> torch.Tensor:
    """Tokens that each write ``active`` random channels (unit random phase) and leave the rest 0.

    Complex64 ``(B, L, D)``. A state that holds one such token has channel entropy
    ``log(active) / log(D)``; one that superposes many spreads over all channels.
    """
    B, L, D = pos_int("B", B), pos_int("L", L), pos_int("D", D)
    active = pos_int("active", active)
    if active > D:
        raise ValueError(f"active={active} cannot exceed D={D}")
    g = generator(seed)
    order = torch.rand(B, L, D, generator=g).argsort(-1)
    mask = order < active  # exactly `active` True per token
    return unit_phases((B, L, D), g) * mask


def entropy_vs_p(ps: Sequence[float], D: int = 64, L: int = 256, active: int = 4, trials: int = 32,
                 seed: int = 0, method: str = "auto") -> dict:
    """Both entropy proxies of the final state against a constant measurement rate ``p``.

    Runs ``minimipt.mipt_scan`` with constant ``p``, random rotations and :func:`sparse_tokens`.
    Returns ``{"p", "state_entropy", "state_entropy_std", "contribution_entropy", "single_token"}``,
    where ``single_token = log(active) / log(D)`` is the channel entropy of one token (the ``p = 1`` value).
    """
    p = probability_grid("ps", ps, open_low=True)
    D, L, trials = pos_int("D", D, 2), pos_int("L", L, 2), pos_int("trials", trials)
    mipt_scan = scan()
    u = sparse_tokens(trials, L, D, active, seed)  # (B, L, D)
    theta = 2 * math.pi * torch.rand(trials, L, D, generator=generator(seed + 1))
    n = p.numel()
    p_in = p.to(torch.float32).repeat_interleave(trials)[:, None, None].expand(n * trials, L, D).contiguous()
    h = mipt_scan(p_in, theta.repeat(n, 1, 1), u.repeat(n, 1, 1), method=method)[:, -1]  # (n B, D)
    ent = state_entropy(h).view(n, trials)
    return {
        "p": p.tolist(),
        "state_entropy": ent.mean(1).tolist(),
        "state_entropy_std": ent.std(1).tolist(),
        "contribution_entropy": [float(contribution_entropy(float(q), L)) for q in p],
        "single_token": math.log(active) / math.log(D) if active > 1 else 0.0,
        "D": D, "L": L, "active": active, "trials": trials, "seed": seed,
    }


def recall_phase_diagram(ps: Sequence[float], ratios: Sequence[float], D: int = 32, trials: int = 16,
                         seed: int = 0, method: str = "auto") -> dict:
    """Recall accuracy of a MIPT state over (p, N/D): the phase diagram of notebook 03.

    For each ``N = round(ratio * D)``: ``N`` random bits ``v_t = +-1`` are written, one per step, on all
    channels (``u_t = v_t``), with random rotations ``theta_t`` and a constant gate ``p`` (one
    ``minimipt.mipt_scan`` call). Item ``t`` is read from ``h_N`` with its rotation key
    (:func:`scan_phase_keys`): ``v_hat_t = sign Re (1/D) sum_d conj(key_{t,d}) h_d``. ``"recall"`` is the
    fraction of the ``N`` bits read correctly (chance 0.5), shape ``(len(ps), len(ratios))``.

    ``"theory"`` is the matched-filter prediction with the decay weights ``w`` of
    :func:`contribution_weights`: item ``t`` is correct with probability
    ``Phi(sqrt(2 D w_t^2 / sum_{s != t} w_s^2))``, averaged over ``t``. Small ``p`` fails by crosstalk
    once N/D > 1; large ``p`` fails by forgetting (only about ``1/p`` recent items survive).
    """
    p = probability_grid("ps", ps, open_low=True)
    r = torch.as_tensor(ratios, dtype=torch.float64).flatten()
    if r.numel() == 0 or bool((r <= 0).any()):
        raise ValueError(f"ratios (N/D) must be positive, got {r.tolist()}")
    D, trials = pos_int("D", D), pos_int("trials", trials)
    mipt_scan = scan()
    n = p.numel()
    recall = torch.zeros(n, r.numel(), dtype=torch.float64)
    theory = torch.zeros_like(recall)
    Ns = [max(1, int(round(float(x) * D))) for x in r]
    for j, N in enumerate(Ns):
        g = generator(seed + j)
        v = random_bits((trials, N), g)  # (B, N)
        theta = 2 * math.pi * torch.rand(trials, N, D, generator=g)  # (B, N, D)
        u = v[..., None].expand(trials, N, D).to(torch.complex64)  # (B, N, D)
        p_in = p.to(torch.float32).repeat_interleave(trials)[:, None, None].expand(n * trials, N, D).contiguous()
        h = mipt_scan(p_in, theta.repeat(n, 1, 1), u.repeat(n, 1, 1), method=method)[:, -1]  # (n B, D)
        keys = scan_phase_keys(theta).repeat(n, 1, 1)  # (n B, N, D)
        v_hat = phase_memory_retrieve(h, keys, "matched")  # (n B, N)
        correct = (torch.sign(v_hat.real) == v.repeat(n, 1)).double()
        recall[:, j] = correct.view(n, trials * N).mean(1)
        for i in range(n):
            w = contribution_weights(float(p[i]), N)  # (N,)
            w2 = w ** 2
            rest = (w2.sum() - w2).clamp_min(1e-300)
            theory[i, j] = phi(torch.sqrt(2 * D * w2 / rest)).mean()
    return {"p": p.tolist(), "ratio": r.tolist(), "N": Ns, "recall": recall.tolist(),
            "theory": theory.tolist(), "D": D, "trials": trials, "seed": seed}
