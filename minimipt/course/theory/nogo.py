"""Fixed (time-invariant) linear operators and what an input-dependent gate adds (notebook ``01_no_go``).

With a fixed state operator ``A`` and input map ``B``, unrolling ``h_t = A h_{t-1} + B x_t`` gives

    h_t = Σ_{s ≤ t} A^{t-s} B x_s,

so token ``s`` enters ``h_t`` through ``A^{t-s} B``: a function of its *age* ``t - s`` only, never of its
content. Three measurable consequences live here:

* the memory kernel ``|λ|^k`` of one channel and the gain range of an operator;
* the retention/precision trade-off of the constant-gate recurrence on a copy/recall task
  (:func:`copy_recall_tradeoff`);
* selective copying: how much of a *marked* token at a random position any fixed operator's state
  still holds (:func:`fixed_operator_recall`, at most ``D / (L m)`` on average over positions), and
  the same measured through :func:`minimipt.mipt_scan` against an input-dependent gate
  (:func:`selective_copy`).

Glossary: ``B`` batch (independent trials), ``L`` length, ``D`` state channels, ``m`` complex numbers per
token, ``K`` lags, ``V`` codebook size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._util import generator, nonneg, pos_int, probability_grid, scan, unit_phases

__all__ = [
    "lti_memory_kernel",
    "gain_range",
    "is_isometry",
    "TRADEOFF_DECAYS",
    "copy_recall_tradeoff",
    "operator_columns",
    "fixed_operator_recall",
    "mipt_operator",
    "selective_copy",
]


def lti_memory_kernel(lam, K: int) -> torch.Tensor:
    """Memory kernel ``|λ|^k``, ``k = 0..K-1``, of the LTI recurrence ``h_t = λ h_{t-1} + u_t``.

    Unrolling gives ``h_t = Σ_k λ^k u_{t-k}``: a token ``k`` steps back enters the state with weight
    ``λ^k``, of magnitude ``|λ|^k``. ``lam`` is one eigenvalue (real or complex) or a 1-D tensor of
    them, shape ``(D,)``; the result has shape ``(K,)`` or ``(D, K)`` (float64).
    """
    K = pos_int("K", K)
    lam_t = torch.as_tensor(lam)
    if lam_t.dim() > 1:
        raise ValueError(f"lam must be a scalar or a 1-D tensor of eigenvalues, got shape {tuple(lam_t.shape)}")
    mag = lam_t.abs().to(torch.float64)
    if not bool(torch.isfinite(mag).all()):
        raise ValueError("lam must be finite")
    k = torch.arange(K, dtype=torch.float64)
    return mag.unsqueeze(-1) ** k  # (K,) or (D, K)


def _square(A) -> torch.Tensor:
    A = torch.as_tensor(A)
    if A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"A must be a square (D, D) matrix, got shape {tuple(A.shape)}")
    return A.to(torch.complex128)


def gain_range(A: torch.Tensor) -> tuple[float, float]:
    """Smallest and largest gain ``‖A h‖ / ‖h‖`` over all nonzero states ``h``: the extreme singular
    values ``σ_min(A) ≤ σ_max(A)`` of the square matrix ``A``."""
    s = torch.linalg.svdvals(_square(A))
    return float(s.min()), float(s.max())


def is_isometry(A: torch.Tensor, atol: float = 1e-6) -> bool:
    """True when ``A^H A = I`` (within ``atol``), i.e. ``‖A h‖ = ‖h‖`` for every ``h``."""
    A = _square(A)
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    return bool(((A.mH @ A) - eye).abs().max() <= nonneg("atol", atol))


TRADEOFF_DECAYS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)  # decays |λ| of notebook 01's trade-off


def copy_recall_tradeoff(decays: Sequence[float], k: int = 4, D: int = 32, L: int = 32, V: int = 64,
                         trials: int = 128, seed: int = 0, method: str = "auto") -> dict:
    """Retention against precision for the constant-gate recurrence: recall, from one state ``h_L``, the
    token ``k`` steps back (retention) and the current token (precision).

    Tokens are random unit-phase vectors ``e_v ∈ C^D`` from a codebook of ``V``; channel ``d`` rotates by a
    fixed ``θ_d``. Two recurrences, both run with :func:`minimipt.mipt_scan`
    (``h_t = (1 - p_t) e^{iθ} h_{t-1} + p_t u_t``):

    * **constant gate** (a fixed operator): ``p_t = 1 - a`` for every token and channel, i.e.
      ``h_t = a e^{iθ} h_{t-1} + (1 - a) u_t``, one decay ``a = |λ|`` per entry of ``decays``;
    * **input-dependent gate**: the token at ``t = L - 1 - k`` carries a marker; on the first ``D // 2``
      ("memory") channels ``p_t = 1`` at the marker and ``0`` elsewhere (write once, then rotate), on the
      other ("register") channels ``p_t = 1`` always (hold the current token).

    Readout (told the age ``k``): the old token is ``argmax_v Re <e_v, e^{-ikθ} ⊙ h_L>``, the current one
    ``argmax_v Re <e_v, h_L>`` (for the gate, over its memory and register channels respectively).
    Chance level is ``1 / V``. Returns ``{"decay", "recall", "current"}`` (one value per decay),
    ``"gate_recall"``, ``"gate_current"``, ``"chance"`` and the arguments.
    """
    k = pos_int("k", k)
    D, L, V = pos_int("D", D, 2), pos_int("L", L, 2), pos_int("V", V, 2)
    trials = pos_int("trials", trials)
    if k >= L:
        raise ValueError(f"k={k} must be smaller than the sequence length L={L}")
    a = probability_grid("decays", decays)
    if bool((a >= 1).any()):
        raise ValueError("decays must be < 1 (a = 1 means p = 0: the scan would write nothing); use e.g. 0.999")
    mipt_scan = scan()
    g = generator(seed)
    codebook = unit_phases((V, D), g)  # (V, D)
    idx = torch.randint(V, (trials, L), generator=g)  # (B, L)
    u = codebook[idx]  # (B, L, D)
    theta_d = 2 * math.pi * torch.rand(D, generator=g)  # (D,)
    theta = theta_d.expand(trials, L, D).contiguous()  # (B, L, D)
    s = L - 1 - k  # position of the old token
    old, cur = idx[:, s], idx[:, -1]  # (B,)
    back = torch.polar(torch.ones(D), -k * theta_d)  # (D,) undoes k rotations

    def decode(h, channels):  # h (B, D) -> token ids (B,)
        return (h[:, channels] @ codebook[:, channels].conj().T).real.argmax(-1)

    n = a.numel()
    p = (1 - a).to(torch.float32).repeat_interleave(trials)[:, None, None].expand(n * trials, L, D)
    h = mipt_scan(p.contiguous(), theta.repeat(n, 1, 1), u.repeat(n, 1, 1), method=method)[:, -1]  # (n B, D)
    every = slice(None)
    recall = (decode(h * back, every) == old.repeat(n)).float().view(n, trials).mean(1)
    current = (decode(h, every) == cur.repeat(n)).float().view(n, trials).mean(1)

    mem, reg = slice(0, D // 2), slice(D // 2, D)
    p_gate = torch.zeros(trials, L, D)
    p_gate[:, s, mem] = 1.0  # write once at the marker, rotate afterwards
    p_gate[..., reg] = 1.0  # always hold the current token
    hg = mipt_scan(p_gate, theta, u, method=method)[:, -1]  # (B, D)
    return {
        "decay": a.tolist(),
        "recall": recall.tolist(),
        "current": current.tolist(),
        "gate_recall": float((decode(hg * back, mem) == old).float().mean()),
        "gate_current": float((decode(hg, reg) == cur).float().mean()),
        "chance": 1.0 / V,
        "k": k, "D": D, "L": L, "V": V, "trials": trials, "seed": seed,
    }


# --------------------------------------------------------------------------------------------
# selective copying: a marked token at a random position
# --------------------------------------------------------------------------------------------

def _input_map(B, D: int) -> torch.Tensor:
    B = torch.as_tensor(B).to(torch.complex128)
    if B.dim() == 1:
        B = B[:, None]
    if B.dim() != 2 or B.shape[0] != D:
        raise ValueError(f"B must have shape (D,) or (D, m) with D = {D} (the rows of A), got {tuple(B.shape)}")
    return B


def operator_columns(A, B, L: int) -> torch.Tensor:
    """``M_s = A^{L-1-s} B`` for the positions ``s = 0..L-1`` (oldest first): the fixed linear map from
    the tokens to the last state, ``h_{L-1} = Σ_s M_s z_s``. ``A``: ``(D, D)``; ``B``: ``(D,)`` or ``(D, m)``.
    Returns complex128 ``(L, D, m)``; note that ``M_s`` depends on the age ``L - 1 - s`` only."""
    A = _square(A)
    B = _input_map(B, A.shape[0])
    L = pos_int("L", L)
    cols = [B]
    for _ in range(L - 1):
        cols.append(A @ cols[-1])
    return torch.stack(cols[::-1])  # (L, D, m): index s holds A^{L-1-s} B


def fixed_operator_recall(A, B, L: int, noise: float = 0.0) -> torch.Tensor:
    """Fraction of a token's variance that the best estimator recovers from the last state of the fixed
    operator ``h_t = A h_{t-1} + B z_t``, for each position ``s`` (oldest first), when told ``s``.

    Tokens ``z_s ∈ C^m`` are i.i.d. ``CN(0, I_m)``; the state carries noise ``n ~ CN(0, σ² I_D)`` with
    ``σ² = noise² · E‖h‖² / D`` (``noise`` is relative to the state's size: a stand-in for finite
    precision). ``h`` and the tokens are jointly Gaussian, so the best estimator of any kind is the linear
    ``ẑ_s = M_s^H G^{-1} h`` with ``G = M M^H + σ² I`` (:func:`operator_columns`), and

        R²_s = tr(M_s^H G^{-1} M_s) / m,       Σ_s m R²_s = Σ_i λ_i / (λ_i + σ²) ≤ rank M ≤ D,

    (``λ_i`` the eigenvalues of ``M M^H``): averaged over positions, no fixed operator recovers more than
    ``D / (L m)`` of a token. With ``noise = 0`` a pseudo-inverse replaces ``G^{-1}``. Returns float64 ``(L,)``.
    """
    M = operator_columns(A, B, L)  # (L, D, m)
    L, D, m = M.shape
    noise = nonneg("noise", noise)
    flat = M.permute(1, 0, 2).reshape(D, L * m)  # (D, L m)
    gram = flat @ flat.mH  # (D, D)
    if noise > 0:
        sigma2 = noise ** 2 * float(flat.abs().pow(2).sum()) / D
        X = torch.linalg.solve(gram + sigma2 * torch.eye(D, dtype=gram.dtype), flat)
    else:
        X = torch.linalg.pinv(gram, hermitian=True, rtol=1e-10) @ flat
    explained = (flat.conj() * X).sum(0).real  # (L m,): diagonal of M^H G^{-1} M
    return explained.view(L, m).mean(-1)


def mipt_operator(p: float, theta: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed operator of the MIPT recurrence with a constant gate ``p`` and constant rotations
    ``θ_d``, for scalar tokens written along ``b``: ``u_t = z_t b`` gives
    ``h_t = (1 - p) e^{iθ} ⊙ h_{t-1} + p b z_t``, i.e. ``A = diag((1 - p) e^{iθ})``, ``B = p b``."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    b = torch.as_tensor(b).to(torch.complex128)
    if theta.dim() != 1 or b.shape != theta.shape:
        raise ValueError(f"theta and b must be 1-D of the same length D, got {tuple(theta.shape)} and {tuple(b.shape)}")
    if not 0 <= float(p) <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    A = torch.diag(torch.polar(torch.full_like(theta, 1 - float(p)), theta))
    return A, float(p) * b[:, None]


def selective_copy(L: int, D: int, ps: Sequence[float], trials: int = 256, noise: float = 1e-3, seed: int = 0,
                   method: str = "auto") -> dict:
    """Selective copying, measured with :func:`minimipt.mipt_scan`: ``L`` scalar tokens ``z_t ~ CN(0, 1)``,
    written along a fixed unit-phase vector ``b ∈ C^D`` (``u_t = z_t b``), channel ``d`` rotating by a fixed
    ``θ_d``; one position ``s*``, uniform at random, is marked. From the last state (plus relative noise
    ``noise``, as in :func:`fixed_operator_recall`) the marked token must be recovered; every reader is
    told ``s*``.

    * **constant gate** ``p`` (a fixed operator, one per entry of ``ps``): the best reader
      ``ẑ = M_{s*}^H G^{-1} h``; ``"theory"`` is the mean over positions of :func:`fixed_operator_recall`;
    * **input-dependent gate**: ``p_t = 1`` at the marker and ``0`` elsewhere, on every channel; then
      ``h_{L-1} = e^{i(L-1-s*)θ} ⊙ b z_{s*}`` and the reader undoes the rotation and ``b``.

    Recall is ``R² = 1 − Σ|ẑ − z|² / Σ|z|²`` over the trials (1 = exact, 0 = nothing). Returns
    ``{"p", "recall", "theory", "gate_recall", "gate_theory", "bound"}`` with ``bound = min(1, D / L)``.
    """
    L, D, trials = pos_int("L", L), pos_int("D", D), pos_int("trials", trials)
    p_grid = probability_grid("ps", ps, open_low=True)
    noise = nonneg("noise", noise)
    mipt_scan = scan()
    g = generator(seed)
    theta_d = 2 * math.pi * torch.rand(D, generator=g, dtype=torch.float64)  # (D,)
    b = unit_phases(D, g).to(torch.complex128)  # (D,)
    z = torch.complex(torch.randn(trials, L, generator=g, dtype=torch.float64),
                      torch.randn(trials, L, generator=g, dtype=torch.float64)) / math.sqrt(2)  # (B, L)
    marked = torch.randint(L, (trials,), generator=g)  # (B,) the position s*
    eps = torch.complex(torch.randn(p_grid.numel() + 1, trials, D, generator=g, dtype=torch.float64),
                        torch.randn(p_grid.numel() + 1, trials, D, generator=g, dtype=torch.float64)) / math.sqrt(2)
    target = z[torch.arange(trials), marked]  # (B,)
    u = z[..., None] * b  # (B, L, D)
    theta = theta_d.expand(trials, L, D)

    def r2(z_hat):
        return 1.0 - float((z_hat - target).abs().pow(2).sum() / target.abs().pow(2).sum())

    recall, theory = [], []
    for i, p in enumerate(p_grid.tolist()):
        A, Bm = mipt_operator(p, theta_d, b)
        M = operator_columns(A, Bm, L)[..., 0]  # (L, D)
        sigma2 = noise ** 2 * float(M.abs().pow(2).sum()) / D
        W = torch.linalg.solve(M.T @ M.conj() + sigma2 * torch.eye(D, dtype=M.dtype), M.T).mH  # (L, D): rows M_s^H G^-1
        h = mipt_scan(torch.full((trials, L, D), p, dtype=torch.float64), theta, u, method=method)[:, -1]  # (B, D)
        h = h + math.sqrt(sigma2) * eps[i]
        recall.append(r2((W[marked] * h).sum(-1)))
        theory.append(float(fixed_operator_recall(A, Bm, L, noise).mean()))

    p_gate = torch.zeros(trials, L, D, dtype=torch.float64)
    p_gate[torch.arange(trials), marked] = 1.0  # write at the marker only
    h = mipt_scan(p_gate, theta, u, method=method)[:, -1] + noise * eps[-1]  # σ² = noise² E‖h‖² / D = noise²
    age = (L - 1 - marked).to(torch.float64)[:, None]  # (B, 1)
    key = b * torch.polar(torch.ones(trials, D, dtype=torch.float64), age * theta_d)  # (B, D)
    gate = r2((key.conj() * h).mean(-1))
    return {"p": p_grid.tolist(), "recall": recall, "theory": theory, "gate_recall": gate,
            "gate_theory": 1.0 - noise ** 2 / D, "bound": min(1.0, D / L),
            "L": L, "D": D, "trials": trials, "noise": noise, "seed": seed}
