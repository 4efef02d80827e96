"""Finished points, one JSON file each under ``OUT/cache/``: an interrupted benchmark resumes.

A cached point is used only when its key matches (the same video, codec and exact settings),
its schema is the current one and its encoded file is still there with the same size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.curves import curve_label
from benchmarks.plan import SCHEMA, Job
from pipeline.files import write_atomically


@dataclass(frozen=True)
class PointRecord:
    """A measured point as the outputs use it: its row of results.csv and its fitting history."""

    key: str
    row: dict
    history: tuple[dict, ...] = field(default=())


def json_ready(value):
    """Plain JSON values: NaN and infinities become null, numpy scalars Python ones."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return json_ready(value.item())
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


class PointCache:
    def __init__(self, out: Path) -> None:
        self.out = out

    def path(self, job: Job) -> Path:
        return self.out / "cache" / f"{job.key}.json"

    def load(self, job: Job) -> PointRecord | None:
        """The cached record of a point, if it is there, readable, and its file is intact."""
        try:
            record = json.loads(self.path(job).read_text())
        except (OSError, ValueError):
            return None
        row = record.get("row") if isinstance(record, dict) else None
        if not isinstance(row, dict) or record.get("key") != job.key or record.get("schema") != SCHEMA:
            return None
        try:
            if (self.out / row["file"]).stat().st_size != row["bytes"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
        row["video"] = job.video.name  # the name depends on the other inputs of this run
        # So does an E-NeRV curve's name: with a budget in it only when the run sweeps several.
        row["setting"] = job.codec.setting()
        row["label"] = curve_label(job.codec.name, row["setting"])
        return PointRecord(job.key, row, tuple(record.get("history") or ()))

    def save(self, job: Job, row: dict, history: tuple[dict, ...]) -> PointRecord:
        record = {"schema": SCHEMA, "key": job.key, "row": row, "history": list(history)}
        write_atomically(self.path(job), (json.dumps(json_ready(record), indent=1) + "\n").encode())
        return PointRecord(job.key, row, history)
