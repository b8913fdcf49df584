"""Input checks and small numerical helpers shared by the theory modules (private).

All random functions of :mod:`minimipt.course.theory` take a ``seed`` and draw from their own
``torch.Generator`` made here, so no global random state is touched.
"""

from __future__ import annotations

import math

import torch


def scan():
    """The package's scan, :func:`minimipt.mipt_scan` (imported lazily: the theory modules never hold
    a private copy of the recurrence)."""
    from ...ops import mipt_scan

    return mipt_scan


def generator(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def pos_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def nonneg(name: str, value) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def probability_grid(name: str, values, open_low: bool = False) -> torch.Tensor:
    """``values`` as a float64 1-D tensor, each in ``[0, 1]`` (``(0, 1]`` with ``open_low``)."""
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise ValueError(f"{name} must hold at least one value")
    low_ok = (t > 0) if open_low else (t >= 0)
    if not bool((low_ok & (t <= 1)).all()):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"every value of {name} must lie in {interval}, got {t.tolist()}")
    return t


def phi(x) -> torch.Tensor:
    """Standard normal CDF, ``Φ(x) = (1 + erf(x / √2)) / 2`` (float64)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def unit_phases(shape, generator: torch.Generator) -> torch.Tensor:
    """Complex64 numbers ``e^{iφ}`` with ``φ`` uniform on ``[0, 2π)``."""
    angle = 2 * math.pi * torch.rand(shape, generator=generator)
    return torch.polar(torch.ones_like(angle), angle)


def random_bits(shape, generator: torch.Generator) -> torch.Tensor:
    """Float32 values ``±1``, each with probability ½."""
    return torch.randint(2, shape, generator=generator).float() * 2 - 1
