"""Timing: the named stages of a job and the time each took, and the median of repeated calls."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator


class StageTimer:
    """``with timer.stage("fit"): ...`` records the wall time of each stage, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def median_seconds(fn: Callable[[], object], *, repeats: int, warmup: int = 1,
                   sync: Callable[[], None] | None = None) -> float:
    """The median wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock reading, so that work
    queued on a device is counted in the call that queued it.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        if sync is not None:
            sync()
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
