"""Every damaged file and bad input ends in one clear line; nothing is lost or half-written."""

from __future__ import annotations

import errno
import hashlib
import json
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import cli
from decompress.decode import decode_frames, read_file_bytes
from pipeline.binary_header import read_header as read_v4_header
from pipeline.bitstream import read_bitstream, write_bitstream
from pipeline.byteio import ByteReader
from pipeline.ffmpeg import ffmpeg_binary
from pipeline.files import write_atomically
from pipeline.quantization import dequantize
from pipeline.video_writer import write_video
from tests.conftest import smooth_clip

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden.bin"
GOLDEN_V4 = DATA / "golden_v4.bin"
GOLDEN_V4_MODELS = DATA / "golden_v4_models.bin"


def _decompress(capsys, path: Path, out: Path) -> tuple[int, str, float]:
    start = time.perf_counter()
    code = cli.decompress_main([str(path), "-o", str(out)])
    elapsed = time.perf_counter() - start
    return code, capsys.readouterr().err, elapsed


def _assert_refused(code: int, err: str, out: Path, what: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (what, code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (what, err)
    assert not out.exists(), what
    assert not [p for p in out.parent.iterdir() if p.name.startswith("." + out.name)], what


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _sections(data: bytes) -> list[int]:
    """Byte offsets where the container's sections start and end."""
    if struct.unpack("<H", data[4:6])[0] == 4:  # header, then each segment's length and bytes
        r = ByteReader(memoryview(data)[6:-4], "file")
        read_v4_header(r)
        cuts = [0, 4, 6]
        while r.remaining:
            cuts.append(len(data) - 4 - r.remaining)
            r.raw(r.varint(r.remaining))
        return cuts + [len(data) - 4, len(data)]
    (header_len,) = struct.unpack("<I", data[6:10])
    payload_at = 10 + header_len + 4
    return [0, 4, 6, 10, 10 + header_len, payload_at, len(data) - 4, len(data)]


def _mutations(data: bytes, rng: np.random.Generator, count: int):
    """Damaged versions of a valid file: (name, bytes)."""
    n = len(data)
    for cut in _sections(data)[:-1]:
        yield f"truncated at section boundary {cut}", data[:cut]
    yield "zero length", b""
    yield "unknown version", _reseal(data[:4] + struct.pack("<H", 2) + data[6:-4])
    yield "huge header length", data[:6] + struct.pack("<I", 0xFFFFFFF0) + data[10:]
    (header_len,) = struct.unpack("<I", data[6:10])
    at = 10 + header_len
    yield "huge payload length", data[:at] + struct.pack("<I", 0xFFFFFFF0) + data[at + 4 :]
    yield "huge payload length, resealed", _reseal(data[:at] + struct.pack("<I", 0xFFFFFFF0) + data[at + 4 : -4])
    kinds = ["flip", "truncate", "append", "swap", "overwrite"]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        if kind == "flip":
            buf = bytearray(data)
            for pos in rng.integers(0, n, size=rng.integers(1, 4)):
                buf[pos] ^= 1 << int(rng.integers(0, 8))
            yield f"bit flips #{i}", bytes(buf)
        elif kind == "truncate":
            yield f"truncated #{i}", data[: int(rng.integers(0, n))]
        elif kind == "append":
            yield f"appended garbage #{i}", data + rng.integers(0, 256, int(rng.integers(1, 64)), np.uint8).tobytes()
        elif kind == "swap":
            a, b = sorted(rng.integers(0, n - 16, size=2))
            size = int(rng.integers(1, 16))
            buf = bytearray(data)
            buf[a : a + size], buf[b : b + size] = data[b : b + size], data[a : a + size]
            yield f"swapped chunks #{i}", bytes(buf)
        else:
            pos = int(rng.integers(0, n - 8))
            yield f"overwritten #{i}", data[:pos] + b"\xff" * 8 + data[pos + 8 :]


def _fuzz(capsys, tmp_path: Path, count: int, golden: Path = GOLDEN, seed: int = 20261124) -> dict:
    data = golden.read_bytes()
    rng = np.random.default_rng(seed)
    out = tmp_path / "out.mkv"
    tried = 0
    for name, mutated in _mutations(data, rng, count):
        if mutated == data:
            continue
        path = tmp_path / "case.bin"
        path.write_bytes(mutated)
        code, err, elapsed = _decompress(capsys, path, out)
        _assert_refused(code, err, out, name)
        assert elapsed < 10, (name, elapsed)
        tried += 1
    return {"cases": tried}


def test_fuzzed_bitstreams_are_all_refused(capsys, tmp_path):
    result = _fuzz(capsys, tmp_path, 500)
    assert result["cases"] >= 500


@pytest.mark.slow
def test_fuzzed_bitstreams_are_all_refused_thousands(capsys, tmp_path):
    result = _fuzz(capsys, tmp_path, 20_000)
    assert result["cases"] >= 20_000


@pytest.mark.parametrize("golden", [GOLDEN_V4, GOLDEN_V4_MODELS], ids=lambda p: p.stem)
def test_fuzzed_version_4_files_are_all_refused(capsys, tmp_path, golden):
    """Damage anywhere (header, a segment's length, records, the stream, the checksum) is refused."""
    assert len(_sections(golden.read_bytes())) >= 7  # magic, version, header, two segments or more, CRC
    result = _fuzz(capsys, tmp_path, 300, golden, seed=20261205)
    assert result["cases"] >= 300


def _forge(edit, golden: Path = GOLDEN) -> bytes:
    """A golden file with its JSON metadata edited and a valid checksum."""
    data = golden.read_bytes()
    (header_len,) = struct.unpack("<I", data[6:10])
    header = data[10 : 10 + header_len]
    length, pos, shift = 0, 0, 0
    while True:
        byte = header[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            break
    meta = json.loads(zlib.decompress(header[pos : pos + length]))
    edit(meta)
    blob = zlib.compress(json.dumps(meta).encode())
    varint = bytearray()
    value = len(blob)
    while True:
        varint.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            break
    new_header = bytes(varint) + blob + header[pos + length :]
    body = data[:6] + struct.pack("<I", len(new_header)) + new_header + data[10 + header_len : -4]
    return _reseal(body)


def _set(section, key, value):
    def edit(meta):
        if section:
            meta[section][key] = value
        else:
            meta[key] = value

    return edit


IMPOSSIBLE = {
    "zero width": _set("video", "width", 0),
    "negative frames": _set("video", "frames", -5),
    "zero frames": _set("video", "frames", 0),
    "billions of frames": _set("video", "frames", 10**12),
    "video larger than the network": _set("video", "width", 10_000),
    "fps is NaN": _set("video", "fps", float("nan")),
    "fps is negative": _set("video", "fps", -24.0),
    "zero channels": _set("network", "fc_dim", 0),
    "enormous channels": _set("network", "fc_dim", 60_000),
    "negative grid": _set("network", "fc_h", -3),
    "enormous grid": _set("network", "fc_w", 4000),
    "no strides": _set("network", "strides", []),
    "hundreds of strides": _set("network", "strides", [2] * 300),
    "strides not a list": _set("network", "strides", "5_2_2"),
    "unknown model": _set("network", "kind", "transformer"),
    "unknown field": _set("network", "dropout", 0.1),
    "missing network": lambda meta: meta.pop("network"),
    "network is a number": _set(None, "network", 7),
    "channels are text": _set("network", "fc_dim", "many"),
    "different network of the right size": _set("network", "lower_width", 9),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE))
def test_valid_checksum_with_impossible_header_is_refused(capsys, tmp_path, case):
    path = tmp_path / "forged.bin"
    path.write_bytes(_forge(IMPOSSIBLE[case]))
    out = tmp_path / "out.mkv"
    code, err, elapsed = _decompress(capsys, path, out)
    _assert_refused(code, err, out, case)
    assert elapsed < 10


# --- determinism ---------------------------------------------------------------------------


def test_decoded_weights_match_the_golden_hashes():
    """The weights come only from integers in the file: the same on every machine."""
    golden = json.loads((DATA / "golden.json").read_text())
    data = GOLDEN.read_bytes()
    assert hashlib.sha256(data).hexdigest() == golden["file_sha256"]
    parsed = read_bitstream(data)
    hashes = {
        name: hashlib.sha256(np.ascontiguousarray(dequantize(t.symbols, t.params).astype("<f4")).tobytes()).hexdigest()
        for (name, _), t in zip(parsed.shapes, parsed.tensors)
    }
    assert hashes == golden["weights_sha256"]


def test_repeated_decodes_are_bit_identical():
    data = read_file_bytes(GOLDEN)
    first = decode_frames(data).frames
    second = decode_frames(data).frames
    assert first.dtype == np.uint8 and first.shape[0] == 6
    np.testing.assert_array_equal(first, second)


# --- failed writes ------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous result")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(OSError):
        write_atomically(target, b"new result" * 1000)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_disk_full_during_compress_is_one_line_and_keeps_the_old_file(capsys, tmp_path, monkeypatch):
    source = tmp_path / "clip.mkv"
    write_video(source, smooth_clip(4, 32, 48), fps=24)
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous result")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    code = cli.compress_main([str(source), "-o", str(target), "--preset", "test-tiny", "--epochs", "1", "-q"])
    err = capsys.readouterr().err
    assert code in (1, 2) and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "No space left" in err
    assert target.read_bytes() == b"previous result"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.bin")]


# --- bad and unusual inputs to enerv-compress ------------------------------------------------------


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _make(kind: str, folder: Path) -> Path:
    lavfi = ["-f", "lavfi", "-i"]
    if kind == "grayscale":
        path = folder / "gray.mkv"
        _ffmpeg(*lavfi, "testsrc=size=48x32:rate=24", "-frames:v", "4", "-pix_fmt", "gray", "-c:v", "ffv1", str(path))
    elif kind == "10-bit":
        path = folder / "ten.mkv"
        _ffmpeg(*lavfi, "testsrc=size=48x32:rate=24", "-frames:v", "4", "-pix_fmt", "yuv420p10le", "-c:v", "ffv1",
                str(path))
    elif kind == "variable frame rate":
        path = folder / "vfr.mkv"
        _ffmpeg(*lavfi, "testsrc=size=48x32:rate=24", "-frames:v", "6", "-vf", "setpts=N*N/24/TB",
                "-fps_mode", "vfr", "-c:v", "ffv1", str(path))
    elif kind == "one frame":
        path = folder / "one.mkv"
        write_video(path, smooth_clip(1, 32, 48), fps=24)
    elif kind == "image":
        path = folder / "still.png"
        write_video(folder / "img_%d.png", smooth_clip(1, 32, 48))
        (folder / "img_0.png").rename(path)
    elif kind == "odd size 321x179":
        path = folder / "odd.mkv"
        write_video(path, smooth_clip(2, 179, 321), fps=24)
    elif kind == "16x16":
        path = folder / "small.mkv"
        write_video(path, smooth_clip(3, 16, 16), fps=24)
    else:
        raise ValueError(kind)
    return path


SERVED = ["grayscale", "10-bit", "variable frame rate", "one frame", "image", "odd size 321x179", "16x16"]


@pytest.mark.parametrize("kind", SERVED)
def test_unusual_inputs_are_served(capsys, tmp_path, kind):
    source = _make(kind, tmp_path)
    out = tmp_path / "out.bin"
    code = cli.compress_main([str(source), "-o", str(out), "--preset", "test-tiny", "--epochs", "2", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    decoded = tmp_path / "decoded.mkv"
    assert cli.decompress_main([str(out), "-o", str(decoded)]) == 0
    assert decoded.exists()


def _refused_inputs(folder: Path) -> dict[str, Path]:
    empty = folder / "empty_dir"
    empty.mkdir()
    text = folder / "notes.txt"
    text.write_text("hello\n")
    zero = folder / "zero.mp4"
    zero.write_bytes(b"")
    audio = folder / "tone.wav"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.2", str(audio))
    huge = folder / "huge.png"
    _ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=9000x16", "-frames:v", "1", str(huge))
    return {"missing file": folder / "missing.mp4", "empty directory": empty, "text file": text,
            "empty file": zero, "audio only": audio, "too large (9000x16)": huge}


def test_bad_inputs_are_refused_in_one_line(capsys, tmp_path):
    for name, source in _refused_inputs(tmp_path).items():
        out = tmp_path / "out.bin"
        start = time.perf_counter()
        code = cli.compress_main([str(source), "-o", str(out), "--preset", "test-tiny", "-q"])
        err = capsys.readouterr().err
        _assert_refused(code, err, out, name)
        assert time.perf_counter() - start < 30, name


# --- format version 2: segments ------------------------------------------------------------------

GOLDEN_V2 = DATA / "golden_v2.bin"


def weight_hashes(shapes, tensors) -> dict[str, str]:
    """SHA-256 of each decoded tensor's float32 weights, by name: what a golden file pins."""
    return {name: hashlib.sha256(np.ascontiguousarray(dequantize(t.symbols, t.params).astype("<f4")).tobytes())
            .hexdigest() for (name, _), t in zip(shapes, tensors)}


def test_golden_v2_decodes_to_its_hashes_and_rewrites_to_its_bytes():
    """A two-segment file of an enerv-grid network: the weights of every segment as recorded,
    and the writer of today gives the same bytes for the same symbols (the format is stable)."""
    golden = json.loads((DATA / "golden_v2.json").read_text())
    data = GOLDEN_V2.read_bytes()
    assert hashlib.sha256(data).hexdigest() == golden["file_sha256"]
    parsed = read_bitstream(data)
    assert parsed.version == 2 and [[s.span.first, s.span.count] for s in parsed.segments] == golden["segments"]
    for segment, expected in zip(parsed.segments, golden["weights_sha256"]):
        assert weight_hashes(parsed.shapes, segment.tensors) == expected
    rewritten, _ = write_bitstream(parsed.header, [s.tensors for s in parsed.segments],
                                   [s.span for s in parsed.segments], version=2)
    assert rewritten == data


def test_golden_v2_decodes_only_the_segment_asked_for(tmp_path):
    parsed = read_bitstream(GOLDEN_V2.read_bytes(), frames=range(5, 6))
    assert parsed.segments[0].tensors is None and parsed.segments[1].tensors is not None
    whole = decode_frames(GOLDEN_V2.read_bytes()).frames
    part = decode_frames(GOLDEN_V2.read_bytes(), (5, 7)).frames
    np.testing.assert_array_equal(whole[5:7], part)


IMPOSSIBLE_V2 = {
    "no segment table": lambda meta: meta.pop("segments"),
    "segments not a list": _set(None, "segments", "all"),
    "empty segment table": _set(None, "segments", []),
    "a gap between segments": _set(None, "segments", [[0, 3], [4, 3]]),
    "overlapping segments": _set(None, "segments", [[0, 4], [3, 4]]),
    "segments short of the video": _set(None, "segments", [[0, 4], [4, 2]]),
    "a segment of no frames": _set(None, "segments", [[0, 7], [7, 0]]),
    "a segment entry of text": _set(None, "segments", [[0, 4], ["4", 3]]),
    "more segments than frames": _set(None, "segments", [[i, 1] for i in range(8)]),
    "one segment for two networks": _set(None, "segments", [[0, 7]]),
    "estimate is text": _set(None, "estimated_weight_bytes", "lots"),
    "estimate is negative": _set(None, "estimated_weight_bytes", -5),
    "grid knots missing": lambda meta: meta["network"].pop("time_grid_knots"),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE_V2))
def test_v2_valid_checksum_with_impossible_header_is_refused(capsys, tmp_path, case):
    path = tmp_path / "forged.bin"
    path.write_bytes(_forge(IMPOSSIBLE_V2[case], GOLDEN_V2))
    out = tmp_path / "out.mkv"
    code, err, elapsed = _decompress(capsys, path, out)
    _assert_refused(code, err, out, case)
    assert elapsed < 10
