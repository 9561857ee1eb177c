"""What every benchmark shares: a median of timed runs after a warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(action: Callable[[], object], repeat: int, warm_up_seconds: float = 0.0) -> float:
    """Median seconds of `repeat` runs of `action`, after untimed warm-up runs: one, or
    as many as fit in `warm_up_seconds` (the JVM compiles a hot path over many runs)."""
    warm_up_until = time.perf_counter() + warm_up_seconds
    action()
    while time.perf_counter() < warm_up_until:
        action()
    return statistics.median(once(action) for _ in range(repeat))


def once(action: Callable[[], object]) -> float:
    """Seconds of one run of `action`."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start
