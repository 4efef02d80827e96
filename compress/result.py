"""What an encode reports: the typed result (``--json`` writes it) and the lines ``enerv-compress`` prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ENCODER_NAME = "enerv-codec 0.1.0"


@dataclass
class CompressResult:
    """What ``enerv-compress`` reports; also written as JSON with ``--json``.

    ``seconds`` and ``stage_seconds`` time this call. ``fit_seconds`` is the time the fit
    took where it ran: in this call, or, when ``fit_reused``, in the earlier call that put
    it in the fit cache (``stage_seconds["fit"]`` is then only the time to load it).
    """

    output: str  # the file written; empty when compress_frames only returned the bytes
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float | None
    frames: int
    width: int
    height: int
    fps: float
    parameters: int
    preset: str
    bits: int | None  # the alphabet's bit depth; None: as wide as the steps need
    prune_ratio: float
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    fit_psnr: float | None = None  # before pruning and quantization, on 8-bit output
    size_split: dict[str, int] = field(default_factory=dict)
    device: str = "cpu"
    fit_history: list[dict] = field(default_factory=list)
    fit_seconds: float = 0.0
    fit_reused: bool = False
    fit_key: str = ""  # identifies the fit (network + fit settings + frames): equal keys, equal fits
    quality: float | None = None  # the rate knob, and the lambda it gave
    rate_lambda: float = 0.0
    # The rate term's estimate (Laplace model of the rounded weights) beside the coded weights
    # (payload and masks, without the header and symbol tables): how well training saw the rate.
    estimated_weight_bytes: float = 0.0
    coded_weight_bytes: int = 0
    # Epochs of fit, prune, rate-distortion and rounding fine-tunes as they ran (of the first
    # segment; fractions of an epoch where a time budget cut one short).
    epochs: list[float] = field(default_factory=list)
    estimated_seconds: float = 0.0  # the plan's estimate, from steps timed before fitting
    time_budget: float | None = None
    segments: int = 1
    target_bytes: int | None = None  # the rate target, when one was asked for
    step_multiplier: float = 1.0  # the factor on every step that brought the file to the target
    target_asked: str = ""  # how the target was asked for ("0.05 bpp", "250,000 bytes"...)
    width_factor: float = 1.0  # rate control's factor on the preset's channels
    notices: list[str] = field(default_factory=list)  # what the encoder chose for the user, said once
    peak_rss_bytes: int = 0  # the encoding process's peak resident memory, where the OS tells it

    def to_json(self) -> dict:
        return asdict(self)


def summary_lines(result: CompressResult) -> list[str]:
    """The summary ``enerv-compress`` prints on standard output."""
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.stage_seconds.items())
    ms = f"{result.ms_ssim:.4f}" if result.ms_ssim is not None else "n/a (frames under 161 px)"
    coding = [f"quality {result.quality:g}" if result.quality is not None else "no rate term"]
    if result.bits is not None:
        coding.append(f"{result.bits}-bit")
    if result.prune_ratio:
        coding.append(f"pruned {result.prune_ratio:.0%}")
    lines = [f"wrote {result.output}: {result.bytes:,} bytes, {result.bpp:.4f} bpp "
             f"({result.frames} frames of {result.width}x{result.height}, {result.parameters:,} parameters, "
             f"{', '.join(coding)})"]
    if result.target_bytes is not None:
        lines.append(f"rate target {result.target_asked}: {result.target_bytes:,} bytes; the file is "
                     f"{result.bytes / result.target_bytes - 1:+.1%} from it (width x{result.width_factor:g}, "
                     f"steps x{result.step_multiplier:.3g})")
    lines.append(f"quality of the decoded frames: PSNR {result.psnr:.2f} dB, MS-SSIM {ms} "
                 f"(fitted before pruning/quantization: {result.fit_psnr:.2f} dB)")
    budget = f" (budget {result.time_budget:g} s)" if result.time_budget is not None else ""
    epochs = "+".join(f"{e:g}" for e in result.epochs)
    lines.append(f"time: {stages}; total {result.seconds:.1f} s on {result.device}{budget}; "
                 f"epochs {epochs} (fit+prune+rd+rounding)")
    return lines
