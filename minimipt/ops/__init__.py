"""The operations behind the layers, each with a slow twin that defines it.

Read in this order:

1. :mod:`~minimipt.ops.reference`: the definitions (the recurrence as a loop; the cache's write
   score, streaming write/evict rule and dense attention over the held positions);
2. :mod:`~minimipt.ops.chunked`: the recurrence in parallel in PyTorch, with its adjoint backward
   (:mod:`~minimipt.ops.closed_form`: the same with a ``C × C`` matrix per chunk, for teaching);
3. :mod:`~minimipt.ops.scan`: :func:`mipt_scan`, the entry point: input checks and the choice of method;
4. :mod:`~minimipt.ops.eviction` and :mod:`~minimipt.ops.cache_attention`: the cache's batched forms;
5. :mod:`~minimipt.ops.triton`: the GPU kernels (optional; checked against the reference on first use).
"""

from __future__ import annotations

from .checks import check_scan_inputs, is_pairs, pairs_to_complex
from .chunked import CHUNK, linear_scan, scan_chunked
from .closed_form import scan_closed_form
from .reference import gate_and_input, scan_sequential
from .scan import mipt_scan, register_scan_method, resolve_method, scan_methods

__all__ = [
    "mipt_scan", "register_scan_method", "scan_methods", "resolve_method",
    "scan_sequential", "scan_chunked", "scan_closed_form", "linear_scan", "gate_and_input", "CHUNK",
    "check_scan_inputs", "is_pairs", "pairs_to_complex",
]
