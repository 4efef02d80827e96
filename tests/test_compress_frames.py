"""compress_frames (frames in, bytes out), compress_video around it, and the fit cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_clip

from compress import encode, segments
from compress.video import compress_frames, compress_video
from pipeline.config import load_preset
from pipeline.errors import InputError
from pipeline.presets import with_codec_settings, with_fit_epochs
from pipeline.video_io import read_video
from pipeline.video_writer import write_video

# 6 fitting epochs, and one epoch of each fine-tune (test-tiny's 3 scaled by 6/30, rounded).
TINY = with_fit_epochs(load_preset("test-tiny"), 6)


def _preset(bits: int, prune: float):
    return with_codec_settings(TINY, {"bits": bits, "prune_ratio": prune})


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return smooth_clip(8, 32, 48)


@pytest.fixture
def fits(monkeypatch) -> list:
    """Counts the fits that run (the fitting loop itself, not the fine-tunes)."""
    calls = []
    real = encode.fit_network

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(encode, "fit_network", counting)
    return calls


def test_compress_video_reads_once_and_writes_what_compress_frames_returns(frames, tmp_path, monkeypatch):
    source, out = tmp_path / "clip.mkv", tmp_path / "clip.bin"
    write_video(source, frames, fps=24)  # FFV1: reads back exactly
    probes = []
    real_probe = segments.probe_video
    monkeypatch.setattr(segments, "probe_video", lambda path: probes.append(path) or real_probe(path))
    result = compress_video(source, out, TINY, progress=False)
    assert len(probes) == 1
    data, alone = compress_frames(read_video(source).frames, 24.0, TINY, progress=False,
                                  source_id=str(source.resolve()))
    assert out.read_bytes() == data and result.bytes == len(data) == alone.bytes
    assert result.psnr == alone.psnr and result.fit_key == alone.fit_key
    assert result.output == str(out) and alone.output == ""
    stages = list(result.stage_seconds)
    assert stages[0] == "read" and stages[-1] == "write" and "read" not in alone.stage_seconds
    assert result.seconds >= result.stage_seconds["fit"] > 0 and alone.stage_seconds["fit"] > 0
    assert not out.with_name(out.name + ".ckpt").exists()
    assert not out.with_name(out.name + ".ckpt.d").exists()
    # With a size given, the size is checked without a probe.
    probes.clear()
    compress_video(source, tmp_path / "small.bin", TINY, size=(40, 24), progress=False)
    assert probes == []


def test_points_differing_only_in_codec_settings_share_one_fit(frames, tmp_path, fits):
    cache = tmp_path / "fits"
    first_bytes, first = compress_frames(frames, 24.0, _preset(8, 0.0), fit_cache=cache, progress=False)
    second_bytes, second = compress_frames(frames, 24.0, _preset(6, 0.3), fit_cache=cache, progress=False)
    assert len(fits) == 1
    assert not first.fit_reused and second.fit_reused and first.fit_key == second.fit_key
    assert second.fit_seconds == first.fit_seconds > 0 and second.fit_history == first.fit_history
    assert second.stage_seconds["fit"] < first.stage_seconds["fit"]
    (entry,) = cache.iterdir()  # one fit, keyed by its fingerprint and the device
    assert entry.name.startswith(first.fit_key) and entry.name.endswith("-cpu.pt")
    # The shared fit makes the bytes a point makes fitting alone.
    alone_bytes, alone = compress_frames(frames, 24.0, _preset(6, 0.3), progress=False)
    assert len(fits) == 2 and not alone.fit_reused
    assert alone_bytes == second_bytes and first_bytes != second_bytes


def test_a_different_fit_or_clip_does_not_share(frames, tmp_path, fits):
    cache = tmp_path / "fits"
    compress_frames(frames, 24.0, TINY, fit_cache=cache, progress=False)
    _, longer = compress_frames(frames, 24.0, with_fit_epochs(TINY, 7), fit_cache=cache, progress=False)
    _, other = compress_frames(smooth_clip(8, 32, 48, seed=1), 24.0, TINY, fit_cache=cache, progress=False)
    _, elsewhere = compress_frames(frames, 24.0, TINY, fit_cache=cache, progress=False, source_id="another.mkv")
    assert len(fits) == 4 and not (longer.fit_reused or other.fit_reused or elsewhere.fit_reused)
    assert len(list(cache.iterdir())) == 4


def test_a_damaged_fit_cache_entry_is_fitted_again(frames, tmp_path, fits):
    cache = tmp_path / "fits"
    data, _ = compress_frames(frames, 24.0, TINY, fit_cache=cache, progress=False)
    (entry,) = cache.iterdir()
    entry.write_bytes(b"not a fit")
    again, result = compress_frames(frames, 24.0, TINY, fit_cache=cache, progress=False)
    assert len(fits) == 2 and not result.fit_reused and again == data
    _, reused = compress_frames(frames, 24.0, TINY, fit_cache=cache, progress=False)
    assert len(fits) == 2 and reused.fit_reused  # the entry was written anew
    # An entry of the right fit but of another network layout (another version of the code).
    stored = torch.load(entry, weights_only=True)
    stored["model"].popitem()
    torch.save(stored, entry)
    again, result = compress_frames(frames, 24.0, TINY, fit_cache=cache, progress=False)
    assert len(fits) == 3 and not result.fit_reused and again == data


@pytest.mark.parametrize("case", ["float frames", "grey frames", "no frames", "bad fps"])
def test_bad_frames_are_refused_before_any_work(case, fits):
    frames, fps = smooth_clip(2, 32, 48), 24.0
    if case == "float frames":
        frames = frames.astype(np.float32)
    elif case == "grey frames":
        frames = frames[..., 0]
    elif case == "no frames":
        frames = frames[:0]
    else:
        fps = float("nan")
    with pytest.raises(InputError):
        compress_frames(frames, fps, TINY, progress=False)
    assert fits == []


def test_resume_without_a_checkpoint_is_refused(frames, tmp_path):
    with pytest.raises(InputError, match="--resume"):
        compress_frames(frames, 24.0, TINY, checkpoint=tmp_path / "x.ckpt", resume=True, progress=False)


def test_a_rate_target_is_met_within_ten_percent(frames):
    from compress.ratecontrol import RateTarget

    _, natural = compress_frames(frames, 24.0, TINY, progress=False)
    qualities = []
    for share in (0.6, 1.3):
        wanted = round(natural.bytes * share)
        data, result = compress_frames(frames, 24.0, TINY, progress=False, target=RateTarget(wanted, f"{wanted} B"))
        assert abs(len(data) / wanted - 1) <= 0.10, (share, len(data), wanted)
        assert result.target_bytes == wanted and result.bytes == len(data)
        qualities.append(result.quality)
    assert qualities[0] < qualities[1]  # the same network: the knob moves with the target
