"""The one timer the data benches share: median wall time after one warm-up call.

Why a median after a warm-up: the first call pays for page-cache misses, allocator growth
and lazy imports that a rerun does not; the median ignores one-off stalls of a shared CPU.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_s(fn: Callable[[], object], reps: int) -> float:
    """Median wall time of `fn()` in seconds over `reps` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
