"""Timing a callable the way the benches do: one warm-up call, then the median wall seconds of `repeats` calls."""

from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int) -> float:
    fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)
