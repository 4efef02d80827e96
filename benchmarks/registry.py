"""The anchor codecs of the benchmark, each registered once: what every other module reads.

An entry says which ffmpeg encoder it is, its container, its rate parameter and range, its
presets (fast to slow) and those ``--quick`` and the full run sweep, the chroma formats it
offers and the pixel format each is encoded in, its flags, how its library reports its
version, and how the figures draw it. Adding a codec is one :class:`AnchorSpec` here (plus a
test); settings, plan, curves, tables, figures, report and machine description follow.

This module imports nothing of ffmpeg or numpy, so the report can read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHROMA = {"yuv420p": "4:2:0", "yuv444p": "4:4:4"}  # the --pix-fmts choices and their labels


@dataclass(frozen=True)
class VersionQuery:
    """How a library's version is found: encode one tiny frame and search ffmpeg's output."""

    pattern: str  # a regex whose group 1 is the version
    text: str = "{}"  # what is reported, e.g. 'core {}'
    loglevel: str = "verbose"
    muxer: str = "null"  # 'h264': x264 writes its version into the stream, on standard output


@dataclass(frozen=True)
class AnchorSpec:
    name: str  # the ``codec`` column and --codecs item: 'x264'
    title: str  # in labels: 'x264', 'SVT-AV1'
    encoder: str  # ffmpeg's encoder: 'libx264'
    extension: str  # the container by its extension
    muxer: str  # ffmpeg's muxer for it
    container: str  # in the report: 'an MP4 file', 'a raw AV1 OBU stream ...'
    knob: str  # the rate parameter, as ffmpeg's option: 'crf' or 'qp'
    knob_range: tuple[int, int]
    rates: dict[str, tuple[float, ...]]  # 'quick' / 'full': the sweep's values
    presets: tuple[str, ...]  # the values its preset option takes, fast to slow
    default_presets: dict[str, tuple[str, ...]]  # 'quick' / 'full'
    chroma: dict[str, str]  # --pix-fmts choice -> the pixel format the encoder gets
    version: VersionQuery
    colours: tuple[str, str, str]  # the figures' colours: fastest, middle, slowest preset
    preset_option: str = "preset"  # ffmpeg's option that takes the preset
    preset_token: str = ""  # before the preset in the setting name: 'p' gives 'p6-yuv420p'
    preset_words: str = ""  # before the preset in labels: 'preset ' gives 'SVT-AV1 preset 6'
    flags: dict = field(default_factory=dict)  # always passed
    low_delay_flags: dict | None = None  # a low-delay setting where the codec has one
    strip_flags: dict = field(default_factory=dict)  # removes what carries no picture (a version SEI)
    params_option: str = ""  # the encoder's key=value option that flags and low-delay flags may both extend
    notes: str = ""  # in the report: what the flags do
    marker: str = "o"

    def preset_label(self, preset: str) -> str:
        return f"{self.preset_words}{preset}"

    def setting_token(self, preset: str) -> str:
        return f"{self.preset_token}{preset}"

    def preset_of_token(self, token: str) -> str:
        return token[len(self.preset_token):] if token.startswith(self.preset_token) else token

    def codec_flags(self, low_delay: bool, strip: bool) -> dict:
        flags = dict(self.flags)
        for extra in ((self.low_delay_flags or {}) if low_delay else {}, self.strip_flags if strip else {}):
            for key, value in extra.items():
                if key == self.params_option and key in flags:
                    flags[key] = f"{flags[key]}:{value}"
                else:
                    flags[key] = value
        return flags


X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
X26X_RATES = {"quick": (18, 26, 34, 42), "full": (18, 22, 26, 30, 34, 38, 42, 46)}
X26X_PRESET_SWEEP = {"quick": ("medium",), "full": ("fast", "medium", "veryslow")}
# AV1's CRF scale runs to 63 and halves the rate about every 10 steps (H.26x: every 6): these
# span the same rates as the x26x values on the bundled clip (about 0.02 to 0.4 bpp).
AV1_RATES = {"quick": (18, 32, 46, 60), "full": (18, 24, 30, 36, 42, 48, 54, 60)}

ANCHORS: dict[str, AnchorSpec] = {spec.name: spec for spec in (
    AnchorSpec(
        name="x264", title="x264", encoder="libx264", extension=".mp4", muxer="mp4", container="an MP4 file",
        knob="crf", knob_range=(0, 51), rates=X26X_RATES, presets=X26X_PRESETS, default_presets=X26X_PRESET_SWEEP,
        chroma={"yuv420p": "yuv420p", "yuv444p": "yuv444p"},
        version=VersionQuery(r"x264 - core (\d+(?: r\d+(?: [0-9a-f]{7,})?)?)", "core {}", "info", "h264"),
        colours=("#6baed6", "#1f77b4", "#08519c"),
        low_delay_flags={"tune": "zerolatency", "g": 12, "bf": 0},
        # x264 writes no other SEI in these configurations; type 6 = SEI NAL units.
        strip_flags={"bsf:v": "filter_units=remove_types=6"},
        notes="x264's SEI message carrying its version and settings (no picture data, about 700 bytes) is "
              "removed with `-bsf:v filter_units=remove_types=6`"),
    AnchorSpec(
        name="x265", title="x265", encoder="libx265", extension=".mp4", muxer="mp4", container="an MP4 file",
        knob="crf", knob_range=(0, 51), rates=X26X_RATES, presets=X26X_PRESETS, default_presets=X26X_PRESET_SWEEP,
        chroma={"yuv420p": "yuv420p", "yuv444p": "yuv444p"},
        version=VersionQuery(r"HEVC encoder version (\S+)", loglevel="info", muxer="hevc"),
        colours=("#74c476", "#2ca02c", "#006d2c"), marker="s",
        # info=0: no settings string in the stream (it would count as rate).
        flags={"x265-params": "log-level=error:info=0"}, params_option="x265-params",
        low_delay_flags={"tune": "zerolatency", "x265-params": "keyint=12:bframes=0"},
        notes="x265 runs with `info=0`, so that it writes no SEI with its version and settings"),
    AnchorSpec(
        name="svtav1", title="SVT-AV1", encoder="libsvtav1", extension=".obu", muxer="obu",
        container="a raw AV1 OBU stream (low-overhead format, no container)",
        knob="crf", knob_range=(0, 63), rates=AV1_RATES, presets=tuple(str(p) for p in range(13, -1, -1)),
        default_presets={"quick": ("6",), "full": ("10", "8", "6", "4", "2")},
        chroma={"yuv420p": "yuv420p", "yuv444p": "yuv444p"},  # this build of libsvtav1 may take 4:2:0 only
        version=VersionQuery(r"SVT-AV1 Encoder Lib (v\S+)"), colours=("#fdae6b", "#e6550d", "#a63603"),
        preset_token="p", preset_words="preset ", marker="v",
        notes="SVT-AV1 writes no metadata OBU; its random-access default GOP and mini-GOP are kept"),
    AnchorSpec(
        name="aom", title="libaom", encoder="libaom-av1", extension=".obu", muxer="obu",
        container="a raw AV1 OBU stream (low-overhead format, no container)",
        knob="crf", knob_range=(0, 63), rates=AV1_RATES, presets=("6", "5", "4", "3", "2", "1", "0"),
        default_presets={"quick": ("6",), "full": ("6", "4")},
        chroma={"yuv420p": "yuv420p", "yuv444p": "yuv444p"},
        version=VersionQuery(r"\[libaom-av1 @ [^\]]*\] (v\d+\.\d+\S*)"), colours=("#bcbddc", "#756bb1", "#54278f"),
        preset_option="cpu-used", preset_token="cpu", preset_words="cpu-used ", marker="P",
        # Good-quality mode, constant quality: -crf with -b:v 0 (a bit rate would cap it).
        flags={"usage": "good", "b:v": 0},
        notes="libaom runs in good-quality mode (`-usage good`) at constant quality (`-crf` with `-b:v 0`); "
              "cpu-used 6 is the fastest good-quality speed (higher values give the same files)"),
    AnchorSpec(
        name="vvenc", title="VVenC", encoder="libvvenc", extension=".266", muxer="vvc",
        container="a raw H.266 Annex B stream (no container)",
        knob="qp", knob_range=(0, 63), rates={"quick": (22, 29, 36, 43), "full": (22, 26, 30, 34, 38, 42, 46, 50)},
        presets=("faster", "fast", "medium", "slow", "slower"),
        default_presets={"quick": ("medium",), "full": ("faster", "medium", "slow")},  # slower: 100 s a point here
        chroma={"yuv420p": "yuv420p10le"},  # VVenC codes 10 bits only
        version=VersionQuery(r"libvvenc version: (\S+)"), colours=("#fa9fb5", "#dd3497", "#7a0177"), marker="X",
        # Access unit delimiters (NAL type 20) are optional in a single-layer stream and carry no picture.
        strip_flags={"bsf:v": "filter_units=remove_types=20"},
        notes="VVenC codes 10-bit 4:2:0 (the only input it takes), QP with its default perceptual QP adaptation "
              "and its default intra period of 1 s; its access unit delimiters are removed "
              "(`-bsf:v filter_units=remove_types=20`)"),
)}

ANCHOR_CODECS = tuple(ANCHORS)


def anchor(name: str) -> AnchorSpec | None:
    return ANCHORS.get(name)


def chroma_label(pix_fmt: str) -> str:
    """'yuv420p' -> '4:2:0', 'yuv420p10le' -> '4:2:0 10-bit'."""
    for base, label in CHROMA.items():
        if pix_fmt == base:
            return label
        if pix_fmt.startswith(base) and pix_fmt.endswith("le") and pix_fmt[len(base):-2].isdigit():
            return f"{label} {pix_fmt[len(base):-2]}-bit"
    return pix_fmt

