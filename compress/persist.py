"""What an encode keeps on disk between runs: fingerprints, the checkpoint folder and the fit cache.

**Checkpoints.** Every encode that may be resumed keeps one folder (``OUT.bin.ckpt.d`` for
``enerv-compress``), whatever its number of segments: ``run.json`` names the run (network, fit
settings, source and clip, segments, device, time budget), ``segment-NNNNN.fit.ckpt`` is the
fitting checkpoint of a segment in progress (written every minute and on Ctrl-C/SIGTERM) and
``segment-NNNNN.pt`` a finished segment, which ``--resume`` takes as it is. A finished segment is
also keyed by its codec settings, so resuming with other codec settings re-runs only the codec
stages, from the fitted network. The folder goes once the file is written.

**Fit cache.** A folder of fitted networks keyed by the fit's fingerprint (network and fit
settings, the frames, the source's name) and the device: calls that differ only in their codec
settings share one fit (the benchmark's points).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from compress.fit import save_checkpoint
from pipeline.config import CodecPreset, section_to_dict
from pipeline.epochs import EpochPlan
from pipeline.errors import InputError

STORE_VERSION = 2


def fit_fingerprint(preset: CodecPreset, plan: EpochPlan, source_id: str, frames: np.ndarray) -> str:
    """Identifies a fit, so that --resume never continues someone else's checkpoint and the
    fit cache never hands out another clip's network."""
    h = hashlib.sha256()
    # Not the codec section: a fitted network can be pruned and quantized in other ways.
    fit = section_to_dict(preset.fit)
    fit["epochs"] = plan.fit
    h.update(json.dumps({"network": section_to_dict(preset.network), "fit": fit}, sort_keys=True).encode())
    h.update(source_id.encode())
    h.update(np.ascontiguousarray(frames[:: max(1, len(frames) // 8)]).tobytes())
    h.update(str(frames.shape).encode())
    return h.hexdigest()


def load_fit_checkpoint(path: Path | None, fingerprint: str) -> dict | None:
    """The fitting checkpoint at ``path`` if there is one; refused when it is another fit's."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        raise InputError(f"checkpoint {path} is unreadable; delete it to start over") from None
    if not isinstance(state, dict) or (state.get("tag") or {}).get("fingerprint") != fingerprint:
        raise InputError(f"checkpoint {path} belongs to a different input or configuration; delete it to start over")
    return state


def planned_in(path: Path | None) -> EpochPlan | None:
    """The epoch plan a resumable run made for its time budget, from its fitting checkpoint."""
    if path is None or not path.exists():
        return None
    with contextlib.suppress(Exception):
        state = torch.load(path, map_location="cpu", weights_only=False)
        epochs = (state.get("tag") or {}).get("plan")
        if isinstance(epochs, list) and len(epochs) == 4:
            return EpochPlan(*epochs)
    return None


class FitCache:
    """Fitted networks in a folder, keyed by fingerprint and device type (a fit on a GPU, in
    bf16, is not the fit a CPU makes)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _file(self, fingerprint: str, device: torch.device) -> Path:
        return self.folder / f"{fingerprint[:32]}-{device.type}.pt"

    def describe(self, fingerprint: str, device: torch.device) -> str:
        return str(self._file(fingerprint, device))

    def load(self, fingerprint: str, device: torch.device, model: torch.nn.Module) -> dict | None:
        """Loads the cached fit into ``model`` and returns its entry (history, seconds); None, with
        the model untouched, when it is missing, damaged, another fit's or another network's."""
        try:
            entry = torch.load(self._file(fingerprint, device), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - missing or damaged: the fit runs and replaces it
            return None
        if (not isinstance(entry, dict) or entry.get("fingerprint") != fingerprint
                or entry.get("device") != device.type or not isinstance(entry.get("model"), dict)
                or not isinstance(entry.get("history"), list) or not isinstance(entry.get("seconds"), float)):
            return None
        return entry if _load_weights(model, entry["model"]) else None

    def store(self, fingerprint: str, device: torch.device, model: torch.nn.Module, history: list[dict],
              seconds: float) -> None:
        self.folder.mkdir(exist_ok=True)
        save_checkpoint(self._file(fingerprint, device),
                        {"fingerprint": fingerprint, "device": device.type, "seconds": float(seconds),
                         "history": history, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}})


def _load_weights(model: torch.nn.Module, state: dict) -> bool:
    """Loads weights; False, with the model untouched, when they are not this code's network
    (another version of it wrote the cache): the fit then runs."""
    own = model.state_dict()
    if state.keys() != own.keys() or any(not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape
                                         for k, v in own.items()):
        return False
    model.load_state_dict(state)
    return True


def run_key(identity: list, preset: CodecPreset, network, spans, device: torch.device,
            time_budget: float | None) -> str:
    """The name of a run for its checkpoint folder: what its fits depend on (not the codec section)."""
    described = {
        "version": STORE_VERSION, "network": section_to_dict(network), "fit": section_to_dict(preset.fit),
        "preset_network": section_to_dict(preset.network), "clip": identity,
        "spans": [[s.first, s.count] for s in spans], "device": device.type, "time_budget": time_budget,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


class SegmentStore:
    """The checkpoint folder of an encode (see the module's text)."""

    def __init__(self, folder: Path, key: str, codec_key: str = ""):
        self.folder = folder
        self.run_key = key
        self.codec_key = codec_key  # what a finished segment also depends on: codec settings, target

    @property
    def _manifest(self) -> Path:
        return self.folder / "run.json"

    def open(self, resume: bool) -> None:
        """Checks that ``resume`` continues this run; creates the folder for a new one."""
        if resume:
            if not self._manifest.exists():
                raise InputError(f"--resume: no checkpoint {self.folder} to resume from")
            try:
                key = json.loads(self._manifest.read_text()).get("run")
            except (OSError, ValueError, AttributeError):
                key = None
            if key != self.run_key:
                raise InputError(f"checkpoint {self.folder} belongs to a different input or configuration; "
                                 "delete it to start over")
            return
        self.folder.mkdir(exist_ok=True)
        tmp = self.folder / f".run.json.{id(self)}.tmp"  # several ranks may write it at once
        tmp.write_text(json.dumps({"run": self.run_key}) + "\n")
        tmp.replace(self._manifest)

    def _finished_file(self, index: int) -> Path:
        return self.folder / f"segment-{index:05d}.pt"

    def fit_checkpoint(self, index: int) -> Path:
        return self.folder / f"segment-{index:05d}.fit.ckpt"

    def finished(self, index: int):
        """Segment ``index`` (a :class:`compress.encode.SegmentEncoding`) as an earlier run of this
        encode finished it, or None."""
        path = self._finished_file(index)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - damaged: encode the segment again
            return None
        if not isinstance(entry, dict) or entry.get("key") != self._segment_key(index):
            return None
        return entry.get("encoding")

    def keep(self, index: int, encoding) -> None:
        """Stores a finished segment (atomically) and drops its fitting checkpoint."""
        save_checkpoint(self._finished_file(index), {"key": self._segment_key(index), "encoding": encoding})
        self.fit_checkpoint(index).unlink(missing_ok=True)

    def forget(self, indices) -> None:
        """Removes these segments' files (the file they went into is written)."""
        for index in indices:
            self._finished_file(index).unlink(missing_ok=True)
            self.fit_checkpoint(index).unlink(missing_ok=True)

    def holds_nothing(self) -> bool:
        """Whether the folder holds no finished segment and no fitting checkpoint."""
        return not any(p.name.startswith("segment-") for p in self.folder.glob("*"))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _segment_key(self, index: int) -> str:
        return hashlib.sha256(f"{self.run_key}/{self.codec_key}/{index}".encode()).hexdigest()
