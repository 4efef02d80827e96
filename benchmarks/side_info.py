"""Side information before and after format version 4, measured on existing files.

    python -m benchmarks.side_info reports/minutes-320/files/*/*.bin

Each file is read, its coded tensors are written again in format version 4 (the same symbols,
steps, masks and context models: no refit), the new file is decoded and compared with the old one
tensor by tensor, and a table shows per file its rate, its bytes in its own version and in version
4, and its side information (everything but coded symbols: header, models, steps, context
models, records, framing and checksum) as a share of the file in each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline.bitstream import FORMAT_VERSION, ParsedStream, read_bitstream, write_bitstream
from pipeline.metrics import bits_per_pixel


def side_share(parsed: ParsedStream, size: int) -> float:
    """Header and side information as a share of the file."""
    return (parsed.split.header + parsed.split.side_info) / size


def transcode(data: bytes) -> tuple[ParsedStream, bytes, ParsedStream]:
    """(the file parsed, its version-4 bytes, those parsed); AssertionError unless every tensor decodes identically."""
    old = read_bitstream(data)
    new_data, _ = write_bitstream(old.header, [s.tensors for s in old.segments], [s.span for s in old.segments])
    new = read_bitstream(new_data)
    assert new.header == old.header and new.version == FORMAT_VERSION
    for a, b in zip(old.segments, new.segments, strict=True):
        for x, y in zip(a.tensors, b.tensors, strict=True):
            assert np.array_equal(x.symbols, y.symbols) and np.array_equal(x.params.scales, y.params.scales)
            assert (x.mask is None) == (y.mask is None) and (x.mask is None or np.array_equal(x.mask, y.mask))
            assert x.context == y.context
    return old, new_data, new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.side_info", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print("| file | bpp | v | bytes | v4 bytes | change | side info | side info v4 | v4 side info (bytes) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for path in args.files:
        data = path.read_bytes()
        old, new_data, new = transcode(data)
        h = old.header
        parts = ", ".join(f"{k} {v}" for k, v in {"header": new.split.header, **new.split.side_parts}.items())
        print(f"| {path.parent.name}/{path.name} | {bits_per_pixel(len(data), h.width, h.height, h.num_frames):.4f} "
              f"| {old.version} | {len(data)} | {len(new_data)} | {len(new_data) / len(data) - 1:+.1%} "
              f"| {side_share(old, len(data)):.1%} | {side_share(new, len(new_data)):.1%} | {parts} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
