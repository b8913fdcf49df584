"""Analysis functions behind the theory notebooks 01-03 (no plotting here: see ``minimipt.course.viz``).

Three ideas, each with a measured quantity and, where one exists, a closed-form prediction:

1. :mod:`~minimipt.course.theory.nogo` (``01_no_go``): the memory kernel of a linear time-invariant
   recurrence, the gain range of an operator, the retention/precision trade-off of a constant gate, and
   selective copying: a fixed operator weighs a token by its age, never its content, so its state must
   hold every token (recall at most ``D / (L m)``), while an input-dependent gate writes only the marked one.
2. :mod:`~minimipt.course.theory.wave` (``02_wave_phase``): a D-channel phase (holographic) memory
   holding ``N`` superposed items; retrieval against ``N/D`` for a matched, a complex-linear and a
   real-linear readout, measured and predicted.
3. :mod:`~minimipt.course.theory.particle` (``03_particle_phase``): how the measurement rate ``p``
   spreads or concentrates the state (two entropy proxies) and the recall phase diagram over ``(p, N/D)``.

Everything that runs the MIPT recurrence calls the package's scan, :func:`minimipt.mipt_scan`. All
random functions take a ``seed`` and use their own ``torch.Generator`` (no global state).
"""

from __future__ import annotations

from .nogo import (
    TRADEOFF_DECAYS,
    copy_recall_tradeoff,
    fixed_operator_recall,
    gain_range,
    is_isometry,
    lti_memory_kernel,
    mipt_operator,
    operator_columns,
    selective_copy,
)
from .particle import (
    contribution_entropy,
    contribution_weights,
    entropy_vs_p,
    geometric_entropy,
    recall_phase_diagram,
    sparse_tokens,
    state_entropy,
)
from .wave import (
    DECODERS,
    ITEMS,
    phase_memory_accuracy,
    phase_memory_retrieve,
    phase_memory_store,
    phase_memory_theory,
    random_phase_keys,
    scan_phase_keys,
)

__all__ = [
    # nogo
    "lti_memory_kernel", "gain_range", "is_isometry", "TRADEOFF_DECAYS", "copy_recall_tradeoff", "operator_columns",
    "fixed_operator_recall", "mipt_operator", "selective_copy",
    # wave
    "DECODERS", "ITEMS", "random_phase_keys", "scan_phase_keys", "phase_memory_store", "phase_memory_retrieve",
    "phase_memory_accuracy", "phase_memory_theory",
    # particle
    "contribution_weights", "contribution_entropy", "geometric_entropy", "state_entropy", "sparse_tokens",
    "entropy_vs_p", "recall_phase_diagram",
]
