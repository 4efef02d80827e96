"""A long real clip encoded as a user would: wall time against the budget, bytes against the target,
quality, peak memory, and one process against several (torchrun).

    python -m benchmarks.long_clip --source ../shared/data/bunny_1280x720.mkv --frames 300 \\
        --target-bpp 0.05 --time-budget 600 --ranks 1,2 -o reports/long-720p

The clip is cut from ``--source`` and made ``--frames`` long by playing it forward, backward,
forward... (a clip of 132 frames gives 300 as 132 + 132 reversed + 36), written losslessly
(FFV1), then encoded by ``enerv-compress`` once per rank count, each in its own process, one
after the other; peak RSS is rank 0's own (``peak_rss_bytes`` of its summary). Prints a
Markdown table and writes ``results.json`` into ``-o``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from pipeline.ffmpeg import ffmpeg_binary

ROOT = Path(__file__).resolve().parent.parent


def mirrored_clip(source: Path, frames: int, output: Path, source_frames: int) -> None:
    """``frames`` frames of ``source`` played forward, backward, forward..., as FFV1."""
    parts, chains, left, forward = 0, [], frames, True
    while left > 0:
        take = min(left, source_frames)
        chain = f"[s{parts}]trim=end_frame={take},setpts=PTS-STARTPTS" if forward else \
            f"[s{parts}]reverse,trim=end_frame={take},setpts=PTS-STARTPTS"
        chains.append(chain + f"[p{parts}]")
        parts, left, forward = parts + 1, left - take, not forward
    graph = f"[0]split={parts}" + "".join(f"[s{i}]" for i in range(parts)) + ";" + ";".join(chains) + ";" + \
        "".join(f"[p{i}]" for i in range(parts)) + f"concat=n={parts}:v=1:a=0"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-i", str(source), "-filter_complex", graph,
                    "-c:v", "ffv1", str(output)], check=True)


def encode(clip: Path, out: Path, ranks: int, args: argparse.Namespace) -> dict:
    exe = str(Path(sys.executable).with_name("enerv-compress"))
    summary = out.with_suffix(".json")
    words = [str(clip), "-o", str(out), "--json", str(summary), "-q"]
    if args.target_bpp:
        words += ["--target-bpp", str(args.target_bpp)]
    if args.time_budget:
        words += ["--time-budget", str(args.time_budget)]
    words += args.extra
    if ranks == 1:
        cmd = [exe, *words]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               exe, *words]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (out.parent / f"{out.stem}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(summary.read_text())
    result.update(wall_seconds=wall, ranks=ranks, command=" ".join(cmd),
                  threads=os.environ.get("OMP_NUM_THREADS", "torch default" if ranks == 1 else "1 (torchrun)"),
                  peak_rss_children=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "bunny_1280x720.mkv")
    p.add_argument("--source-frames", type=int, default=132)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--target-bpp", type=float, default=0.05)
    p.add_argument("--time-budget", type=float, default=600.0)
    p.add_argument("--ranks", default="1,2")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("extra", nargs="*", help="more enerv-compress options (after --)")
    args = p.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    clip = args.output / f"clip_{args.frames}f.mkv"
    if not clip.exists():
        mirrored_clip(args.source, args.frames, clip, args.source_frames)
    rows = []
    for ranks in (int(r) for r in args.ranks.split(",")):
        rows.append(encode(clip, args.output / f"ranks{ranks}.bin", ranks, args))
        (args.output / "results.json").write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                                              "cpus": os.cpu_count(), "rows": rows}, indent=2))
    print("| ranks | wall s (budget) | bytes (target) | bpp | PSNR dB | MS-SSIM | epochs | peak RSS GB (rank 0) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in rows:
        ms = f"{r['ms_ssim']:.4f}" if r["ms_ssim"] is not None else "n/a"
        print(f"| {r['ranks']} | {r['wall_seconds']:.0f} ({args.time_budget:g}) | {r['bytes']:,} "
              f"({r['target_bytes']:,}) | {r['bpp']:.4f} | {r['psnr']:.2f} | {ms} | "
              f"{'+'.join(f'{e:g}' for e in r['epochs'])} | {r['peak_rss_bytes'] / 1e9:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
