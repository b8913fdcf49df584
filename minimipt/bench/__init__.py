"""Benchmarks (not timed tests): ``python -m minimipt.bench <name> ...``.

* ``scan`` (:mod:`minimipt.bench.scan`): every scan method, and the peer
  ``accelerated_scan.complex.scan`` when it is installed, in one run: milliseconds forward and
  forward+backward, achieved bandwidth against the memory floor, relative error against float64.
* ``scaling`` (:mod:`minimipt.bench.scaling`): training memory and speed against length, decoding
  latency and state size against context, MIPT against the Transformer and HGRN.
* ``generate`` (:mod:`minimipt.bench.generate`): time to first token, parallel prefill against
  token by token, and decoding speed per decoding mode.
* ``cache`` (:mod:`minimipt.bench.cache`): the cache's pieces per layer, PyTorch forms vs the fused kernels.
* ``entry`` (:mod:`minimipt.bench.entry`): ``mipt_scan``'s default value check against the raw kernel.
"""

from __future__ import annotations

__all__: list[str] = []
