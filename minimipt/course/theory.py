"""Analysis functions behind the theory notebooks 01-03 (no plotting here: see ``minimipt.course.viz``).

Three ideas, each with a measured quantity and, where one exists, a closed-form prediction:

1. **The no-go argument** (``01_no_go``): the memory kernel of a linear time-invariant (LTI)
   recurrence, the gain range of a linear operator, and a copy/recall toy task on which every
   fixed operator trades retention of an old token against storage of the current one, while an
   input-dependent gate gets both.
2. **The wave phase** (``02_wave_phase``): a D-channel phase (holographic) memory holding N
   superposed key -> value items; its retrieval quality against N/D, measured and predicted.
3. **The particle phase** (``03_particle_phase``): how the measurement rate p spreads or
   concentrates the state (two entropy proxies) and the recall phase diagram over (p, N/D).

Everything that runs the MIPT recurrence calls the package's scan, ``minimipt.mipt_scan``.

Dimension glossary (as in the package): ``B`` batch (here: independent trials), ``L`` sequence
length, ``D`` state channels, ``N`` stored items, ``K`` lags of a kernel, ``V`` codebook size.
All random functions take a ``seed`` and use their own ``torch.Generator`` (no global state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "lti_memory_kernel",
    "gain_range",
    "is_isometry",
    "copy_recall_tradeoff",
    "random_phase_keys",
    "scan_phase_keys",
    "phase_memory_store",
    "phase_memory_retrieve",
    "phase_memory_accuracy",
    "phase_memory_theory",
    "contribution_weights",
    "contribution_entropy",
    "state_entropy",
    "sparse_tokens",
    "entropy_vs_p",
    "recall_phase_diagram",
]

_DECODERS = ("matched", "lstsq")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def _scan():
    """The package's scan (imported lazily so that this module never holds a private copy)."""
    from ..ops import mipt_scan

    return mipt_scan


def _generator(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _pos_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _nonneg(name: str, value) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _probability_grid(name: str, values, open_low: bool = False) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise ValueError(f"{name} must hold at least one value")
    low_ok = (t > 0) if open_low else (t >= 0)
    if not bool((low_ok & (t <= 1)).all()):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"every value of {name} must lie in {interval}, got {t.tolist()}")
    return t


def _phi(x: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF."""
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _unit_phases(shape, generator: torch.Generator) -> torch.Tensor:
    """Complex64 numbers e^{i phi} with phi uniform on [0, 2 pi)."""
    phi = 2 * math.pi * torch.rand(shape, generator=generator)
    return torch.polar(torch.ones_like(phi), phi)


# --------------------------------------------------------------------------------------------
# 1. the no-go argument
# --------------------------------------------------------------------------------------------

def lti_memory_kernel(lam, K: int) -> torch.Tensor:
    """Memory kernel ``|lambda|^k``, ``k = 0..K-1``, of the LTI recurrence ``h_t = lambda h_{t-1} + u_t``.

    Unrolling gives ``h_t = sum_k lambda^k u_{t-k}``: a token ``k`` steps back enters the state with
    weight ``lambda^k``, of magnitude ``|lambda|^k``. ``lam`` is one eigenvalue (real or complex) or a
    1-D tensor of them, shape ``(D,)``; the result has shape ``(K,)`` or ``(D, K)`` (float64).
    """
    K = _pos_int("K", K)
    lam_t = torch.as_tensor(lam)
    if lam_t.dim() > 1:
        raise ValueError(f"lam must be a scalar or a 1-D tensor of eigenvalues, got shape {tuple(lam_t.shape)}")
    mag = lam_t.abs().to(torch.float64)
    if not bool(torch.isfinite(mag).all()):
        raise ValueError("lam must be finite")
    k = torch.arange(K, dtype=torch.float64)
    return mag.unsqueeze(-1) ** k  # (K,) or (D, K)


def gain_range(A: torch.Tensor) -> tuple[float, float]:
    """Smallest and largest gain ``||A h|| / ||h||`` over all nonzero states ``h``.

    These are the extreme singular values of ``A`` (shape ``(D, D)``). ``A`` preserves every norm
    iff both equal 1 (``A`` is an isometry); it strongly shrinks some state iff the first is small.
    """
    A = torch.as_tensor(A)
    if A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"A must be a square (D, D) matrix, got shape {tuple(A.shape)}")
    s = torch.linalg.svdvals(A.to(torch.complex128))
    return float(s.min()), float(s.max())


def is_isometry(A: torch.Tensor, atol: float = 1e-6) -> bool:
    """True when ``A^H A = I`` (within ``atol``), i.e. ``||A h|| = ||h||`` for every ``h``."""
    A = torch.as_tensor(A)
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (D, D) matrix, got shape {tuple(A.shape)}")
    A = A.to(torch.complex128)
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    return bool(((A.mH @ A) - eye).abs().max() <= _nonneg("atol", atol))


def copy_recall_tradeoff(decays: Sequence[float], k: int = 4, D: int = 32, L: int = 32, V: int = 64,
                         trials: int = 128, seed: int = 0, method: str = "auto") -> dict:
    """Copy/recall toy task: recall the token ``k`` steps back AND the current token from one state.

    Tokens are random unit-phase vectors ``e_v in C^D`` from a codebook of ``V``; every channel has a
    fixed rotation ``theta_d``. Two kinds of recurrence, both run with ``minimipt.mipt_scan``
    (``h_t = (1 - p_t) e^{i theta} h_{t-1} + p_t u_t``):

    * **fixed operator** (LTI): ``p_t = 1 - a`` for every token and channel, so
      ``h_t = a e^{i theta} h_{t-1} + (1 - a) u_t`` with decay ``a = |lambda|`` from ``decays``;
    * **input-dependent gate**: the token at ``t - k`` carries a marker; on the first ``D // 2``
      ("memory") channels ``p_t = 1`` at the marker and ``0`` elsewhere (write once, then rotate),
      on the other ("register") channels ``p_t = 1`` always (hold the current token).

    Decoding is a linear readout plus a nearest-codeword choice: the old token is
    ``argmax_v Re <e_v, e^{-i k theta} h_L>``, the current one ``argmax_v Re <e_v, h_L>`` (for the
    gate, on its memory and register channels respectively). Chance level is ``1 / V``.

    Returns ``{"decay", "recall", "current"}`` (one value per decay) and ``"gate_recall"``,
    ``"gate_current"``, ``"chance"``.
    """
    k = _pos_int("k", k)
    D = _pos_int("D", D, 2)
    L = _pos_int("L", L, 2)
    V = _pos_int("V", V, 2)
    trials = _pos_int("trials", trials)
    if k >= L:
        raise ValueError(f"k={k} must be smaller than the sequence length L={L}")
    a = _probability_grid("decays", decays)
    if bool((a >= 1).any()):
        raise ValueError("decays must be < 1 (a = 1 means p = 0: the scan would write nothing); use e.g. 0.999")
    mipt_scan = _scan()
    g = _generator(seed)
    codebook = _unit_phases((V, D), g)  # (V, D)
    idx = torch.randint(V, (trials, L), generator=g)  # (B, L)
    u = codebook[idx]  # (B, L, D)
    theta_d = 2 * math.pi * torch.rand(D, generator=g)  # (D,)
    theta = theta_d.expand(trials, L, D).contiguous()  # (B, L, D)
    s = L - 1 - k  # position of the old token
    old, cur = idx[:, s], idx[:, -1]  # (B,)
    back = torch.polar(torch.ones(D), -k * theta_d)  # (D,) undoes k rotations

    def decode(h, channels):  # h (B, D) -> token ids (B,)
        return (h[:, channels] @ codebook[:, channels].conj().T).real.argmax(-1)

    every = slice(None)
    n = a.numel()
    p = (1 - a).to(torch.float32).repeat_interleave(trials)[:, None, None].expand(n * trials, L, D)
    h = mipt_scan(p.contiguous(), theta.repeat(n, 1, 1), u.repeat(n, 1, 1), method=method)[:, -1]  # (n B, D)
    recall = (decode(h * back, every) == old.repeat(n)).float().view(n, trials).mean(1)
    current = (decode(h, every) == cur.repeat(n)).float().view(n, trials).mean(1)

    mem, reg = slice(0, D // 2), slice(D // 2, D)
    marker = torch.zeros(trials, L)
    marker[:, s] = 1.0
    p_gate = torch.empty(trials, L, D)
    p_gate[..., mem] = marker[..., None]  # write once at the marker, rotate afterwards
    p_gate[..., reg] = 1.0  # always hold the current token
    hg = mipt_scan(p_gate, theta, u, method=method)[:, -1]  # (B, D)
    gate_recall = (decode(hg * back, mem) == old).float().mean()
    gate_current = (decode(hg, reg) == cur).float().mean()
    return {
        "decay": a.tolist(),
        "recall": recall.tolist(),
        "current": current.tolist(),
        "gate_recall": float(gate_recall),
        "gate_current": float(gate_current),
        "chance": 1.0 / V,
        "k": k, "D": D, "L": L, "V": V, "trials": trials, "seed": seed,
    }


# --------------------------------------------------------------------------------------------
# 2. the wave phase: a phase (holographic) memory
# --------------------------------------------------------------------------------------------

def random_phase_keys(N: int, D: int, trials: int | None = None, seed: int = 0) -> torch.Tensor:
    """Random unit-phase keys ``k_{n,d} = e^{i phi_{n,d}}``, phi uniform: shape ``(N, D)`` or ``(B, N, D)``."""
    N, D = _pos_int("N", N), _pos_int("D", D)
    shape = (N, D) if trials is None else (_pos_int("trials", trials), N, D)
    return _unit_phases(shape, _generator(seed))


def scan_phase_keys(theta: torch.Tensor) -> torch.Tensor:
    """The keys that the pure rotation ``h_t = e^{i theta_t} h_{t-1} + u_t`` gives each position.

    ``h_L = sum_t key_t * u_t`` with ``key_t = exp(i sum_{s=t+1}^{L} theta_s)``: every later step
    rotates what was written at ``t``. ``theta``: real ``(..., L, D)``; result complex ``(..., L, D)``.
    """
    theta = torch.as_tensor(theta)
    if theta.is_complex() or theta.dim() < 2:
        raise ValueError(f"theta must be a real tensor of shape (..., L, D), got {theta.dtype} {tuple(theta.shape)}")
    total = theta.sum(-2, keepdim=True)  # (..., 1, D)
    after = total - theta.cumsum(-2)  # (..., L, D): sum over s > t
    return torch.polar(torch.ones_like(after), after)


def phase_memory_store(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Superpose ``N`` items in one state: ``h_d = sum_n v_n k_{n,d}``.

    ``keys``: complex ``(..., N, D)``; ``values``: ``(..., N)`` (real or complex). Returns ``(..., D)``.
    """
    keys, values = torch.as_tensor(keys), torch.as_tensor(values)
    if not keys.is_complex() or keys.dim() < 2:
        raise ValueError(f"keys must be a complex tensor of shape (..., N, D), got {keys.dtype} {tuple(keys.shape)}")
    if values.shape != keys.shape[:-1]:
        raise ValueError(f"values must have shape keys.shape[:-1] = {tuple(keys.shape[:-1])}, got {tuple(values.shape)}")
    return (values.to(keys.dtype).unsqueeze(-1) * keys).sum(-2)  # (..., D)


def phase_memory_retrieve(h: torch.Tensor, keys: torch.Tensor, decoder: str = "matched") -> torch.Tensor:
    """Read every item back from the state ``h`` (``(..., D)``) with its key (``keys``: ``(..., N, D)``).

    * ``"matched"``: multiply by the conjugate key and average the channels,
      ``v_hat_n = (1/D) sum_d conj(k_{n,d}) h_d = v_n + crosstalk``; crosstalk variance ``(N-1)/D``.
    * ``"lstsq"``: the best linear decoder, the minimum-norm solution of ``K^T v = h``
      (``v_hat = pinv(K^T) h``). It is exact while ``N <= D`` and keys are independent, and can only
      recover the projection of ``v`` on a ``D``-dimensional subspace once ``N > D``.

    Returns complex ``(..., N)``.
    """
    h, keys = torch.as_tensor(h), torch.as_tensor(keys)
    if decoder not in _DECODERS:
        raise ValueError(f"decoder must be one of {_DECODERS}, got {decoder!r}")
    if keys.dim() < 2 or h.shape[-1] != keys.shape[-1] or h.shape[:-1] != keys.shape[:-2]:
        raise ValueError(f"h (..., D) and keys (..., N, D) disagree: {tuple(h.shape)} vs {tuple(keys.shape)}")
    h = h.to(keys.dtype)
    if decoder == "matched":
        return (keys.conj() * h.unsqueeze(-2)).mean(-1)  # (..., N)
    A = keys.transpose(-1, -2).to(torch.complex128)  # (..., D, N): h = A v
    b = h.to(torch.complex128).unsqueeze(-1)  # (..., D, 1)
    D, N = A.shape[-2], A.shape[-1]
    if N <= D:  # least squares: (A^H A) v = A^H h
        v = torch.linalg.solve(A.mH @ A, A.mH @ b)
    else:  # minimum norm: v = A^H (A A^H)^{-1} h
        v = A.mH @ torch.linalg.solve(A @ A.mH, b)
    return v.squeeze(-1).to(keys.dtype)  # (..., N)


def phase_memory_accuracy(D: int, N: int, noise: float = 0.0, trials: int = 64, seed: int = 0,
                          decoder: str = "matched") -> dict:
    """Measure a phase memory: store ``N`` random bits ``v_n = +-1`` in ``D`` channels, read them back.

    ``h = sum_n v_n k_n + n``, with random unit-phase keys and channel noise ``n_d`` complex Gaussian
    with ``E|n_d|^2 = noise^2`` (per-item signal per channel has magnitude 1). Returns the means over
    ``trials`` of

    * ``"accuracy"``: fraction of bits with ``sign(Re v_hat_n) = v_n`` (chance 0.5);
    * ``"quality"``: squared cosine similarity ``|<v_hat, v>|^2 / (||v_hat||^2 ||v||^2)`` in ``[0, 1]``.
    """
    D, N, trials = _pos_int("D", D), _pos_int("N", N), _pos_int("trials", trials)
    noise = _nonneg("noise", noise)
    if decoder not in _DECODERS:
        raise ValueError(f"decoder must be one of {_DECODERS}, got {decoder!r}")
    g = _generator(seed)
    keys = _unit_phases((trials, N, D), g)  # (B, N, D)
    v = torch.randint(2, (trials, N), generator=g).float() * 2 - 1  # (B, N)
    eps = torch.complex(torch.randn(trials, D, generator=g), torch.randn(trials, D, generator=g))
    h = phase_memory_store(keys, v) + noise / math.sqrt(2) * eps  # (B, D)
    v_hat = phase_memory_retrieve(h, keys, decoder)  # (B, N)
    accuracy = (torch.sign(v_hat.real) == v).float().mean()
    inner = (v_hat.conj() * v).sum(-1).abs() ** 2
    quality = inner / ((v_hat.abs() ** 2).sum(-1) * (v ** 2).sum(-1)).clamp_min(1e-30)
    return {"accuracy": float(accuracy), "quality": float(quality.mean())}


def phase_memory_theory(D: float, N: float, noise: float = 0.0, decoder: str = "matched") -> dict:
    """Predicted ``{"accuracy", "quality"}`` of :func:`phase_memory_accuracy` (large-D approximations).

    Matched decoder: ``v_hat_n = v_n + c_n``, ``c_n`` a sum of ``N - 1`` random-phase crosstalk terms
    and noise, ``E|c_n|^2 = (N - 1 + noise^2) / D``, so the signal-to-crosstalk ratio is
    ``SNR = D / (N - 1 + noise^2)``, crossing 1 at ``N ~ D``, and

        accuracy = Phi(sqrt(2 SNR)),    quality = SNR / (1 + SNR) = D / (D + N - 1 + noise^2).

    Least-squares decoder (random-matrix approximations, Gaussian-like keys): for ``N < D`` the
    noise is amplified by ``tr((K^H K)^{-1}) ~ N / (D - N)``; for ``N > D`` only the projection of
    ``v`` on a D-dimensional subspace survives (``P_nn ~ D / N``):

        N < D:  accuracy = Phi(sqrt(2 (D - N)) / noise),  quality = (D - N) / (D - N + noise^2)
        N > D:  accuracy = Phi(sqrt(2) r / s),  s^2 = r (1 - r) + noise^2 r / (N - D),  r = D / N,
                quality = D (N - D) / (N (N - D + noise^2))

    so without noise it is exact up to ``N = D`` and falls as ``D / N`` after: a kink at N/D = 1.
    Both formulas diverge at ``N = D`` exactly with noise; evaluate them off that point.
    """
    D, N = float(D), float(N)
    if not (D >= 1 and N >= 1):
        raise ValueError(f"D and N must be >= 1, got D={D}, N={N}")
    noise = _nonneg("noise", noise)
    n2 = noise ** 2
    if decoder == "matched":
        snr = D / max(N - 1 + n2, 1e-300)
        acc = float(_phi(torch.tensor(math.sqrt(2 * snr), dtype=torch.float64)))
        return {"accuracy": acc, "quality": snr / (1 + snr) if math.isfinite(snr) else 1.0}
    if decoder != "lstsq":
        raise ValueError(f"decoder must be one of {_DECODERS}, got {decoder!r}")
    if N < D:
        if n2 == 0:
            return {"accuracy": 1.0, "quality": 1.0}
        z = math.sqrt(2 * (D - N)) / noise
        return {"accuracy": float(_phi(torch.tensor(z, dtype=torch.float64))), "quality": (D - N) / (D - N + n2)}
    if N == D:
        if n2 == 0:
            return {"accuracy": 1.0, "quality": 1.0}
        raise ValueError("the least-squares prediction diverges at N == D with noise > 0; evaluate it off N = D")
    r = D / N
    s2 = r * (1 - r) + n2 * r / (N - D)
    z = math.sqrt(2) * r / math.sqrt(s2)
    return {"accuracy": float(_phi(torch.tensor(z, dtype=torch.float64))),
            "quality": D * (N - D) / (N * (N - D + n2))}


# --------------------------------------------------------------------------------------------
# 3. the particle phase: the measurement gate and entropy proxies
# --------------------------------------------------------------------------------------------

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
        p_t = torch.full((_pos_int("L", L),), float(p), dtype=torch.float64)
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
    B, L, D = _pos_int("B", B), _pos_int("L", L), _pos_int("D", D)
    active = _pos_int("active", active)
    if active > D:
        raise ValueError(f"active={active} cannot exceed D={D}")
    g = _generator(seed)
    order = torch.rand(B, L, D, generator=g).argsort(-1)
    mask = order < active  # exactly `active` True per token
    return _unit_phases((B, L, D), g) * mask


def entropy_vs_p(ps: Sequence[float], D: int = 64, L: int = 256, active: int = 4, trials: int = 32,
                 seed: int = 0, method: str = "auto") -> dict:
    """Both entropy proxies of the final state against a constant measurement rate ``p``.

    Runs ``minimipt.mipt_scan`` with constant ``p``, random rotations and :func:`sparse_tokens`.
    Returns ``{"p", "state_entropy", "state_entropy_std", "contribution_entropy", "single_token"}``,
    where ``single_token = log(active) / log(D)`` is the channel entropy of one token (the ``p = 1`` value).
    """
    p = _probability_grid("ps", ps, open_low=True)
    D, L, trials = _pos_int("D", D, 2), _pos_int("L", L, 2), _pos_int("trials", trials)
    mipt_scan = _scan()
    u = sparse_tokens(trials, L, D, active, seed)  # (B, L, D)
    theta = 2 * math.pi * torch.rand(trials, L, D, generator=_generator(seed + 1))
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
    p = _probability_grid("ps", ps, open_low=True)
    r = torch.as_tensor(ratios, dtype=torch.float64).flatten()
    if r.numel() == 0 or bool((r <= 0).any()):
        raise ValueError(f"ratios (N/D) must be positive, got {r.tolist()}")
    D, trials = _pos_int("D", D), _pos_int("trials", trials)
    mipt_scan = _scan()
    n = p.numel()
    recall = torch.zeros(n, r.numel(), dtype=torch.float64)
    theory = torch.zeros_like(recall)
    Ns = [max(1, int(round(float(x) * D))) for x in r]
    for j, N in enumerate(Ns):
        g = _generator(seed + j)
        v = torch.randint(2, (trials, N), generator=g).float() * 2 - 1  # (B, N)
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
            theory[i, j] = _phi(torch.sqrt(2 * D * w2 / rest)).mean()
    return {"p": p.tolist(), "ratio": r.tolist(), "N": Ns, "recall": recall.tolist(),
            "theory": theory.tolist(), "D": D, "trials": trials, "seed": seed}
