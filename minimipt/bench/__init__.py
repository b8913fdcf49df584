"""Benchmarks (not timed tests): ``python -m minimipt.bench <name> ...``.

* ``scan`` (:mod:`minimipt.bench.scan`): every scan method, and the peer
  ``accelerated_scan.complex.scan`` when it is installed, in one run: milliseconds forward and
  forward+backward, achieved bandwidth against the memory floor, relative error against float64.
"""

from __future__ import annotations

__all__: list[str] = []
