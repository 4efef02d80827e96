"""Runs the named stages of a job in order and keeps the time each took."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


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
