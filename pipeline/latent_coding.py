"""Context coding of latent grids: both halves (encode, decode), bit-exact on every machine.

A latent tensor holds integer symbols ``y[t, c, i, j]`` (one latent frame per video frame, ``C``
channels of ``H x W``), within ``+-LATENT_BOUND``. Each symbol is coded with a discretized Laplace
distribution whose mean and scale depend on four values the decoder already has::

    f = (y[t-1, c, i, j],  y[t, c, i-1, j],  y[t, c, i-1, j-1],  y[t, c, i-1, j+1])   (0 outside)

    mean  = clip((sum W_k f_k + 32) >> 6, -LATENT_BOUND, LATENT_BOUND)
    index = clip((S + sum V_k |f_k| + 32) >> 6, 0, SCALES - 1)      scale = 2^(index/4 - 4)

with nine integers per tensor (:class:`LatentContext`: ``W``, ``V`` and ``S``, 6 fractional bits),
stored in the file. The residual ``y - mean`` (within ``+-2 LATENT_BOUND``) is range-coded with
table ``index`` of a fixed bank of ``SCALES`` tables. The tables are built from the integers of
:data:`_LAPLACE` by integer multiplications and shifts alone, so encoder and decoder get the same
counts on any CPU; no floating-point function decides a probability.

Version 3 gives a tensor a stream of its own, in the order frame after frame, row after row,
channel after channel within a row: the decoder decodes a row ``(t, i)`` (all channels) per call.
Version 4 puts it into the one stream of its segment, between the tensors before and after it,
diagonal by diagonal of (frame, row) (:func:`encode_latent_diagonals`): a diagonal's rows depend
only on the diagonal before, so the decoder decodes one diagonal per step, T + H - 1 steps for
a tensor instead of T x H (about 5x faster at 320x180).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import constriction
import numpy as np

from pipeline.byteio import ByteReader, ByteWriter
from pipeline.errors import BitstreamError

LATENT_BOUND = 63  # |latent symbol| bound
RESIDUAL_BOUND = 2 * LATENT_BOUND
ALPHABET = 2 * RESIDUAL_BOUND + 1
SCALES = 48  # tables in the bank: scale 2^(k/4 - 4), from 1/16 to about 215
FEATURES = 4
FRACTION_BITS = 6
PARAM_BOUND = 1 << 15  # |W_k|, |V_k|, |S| bound (int16)
_HALF = 1 << (FRACTION_BITS - 1)

# Per table k, in units of 2^-30, for Laplace(0, b = 2^(k/4 - 4)) on integer bins: the mass of the
# bin at 0, the mass of the bin at 1, and exp(-1/b), the ratio of each bin's mass to the previous
# one's beyond 1. Made once by ``round(value * 2**30)`` (tests/test_latent_coding.py remakes them);
# from here on only integers are used.
_LAPLACE = (
    (1073381624, 180100, 121), (1072455571, 643126, 1541), (1069990718, 1875530, 13104),
    (1064515355, 4612894, 79281), (1054075556, 9829835, 360200), (1036578618, 18559344, 1286253),
    (1010277512, 31621300, 3751106), (974208687, 49338934, 9226469), (928426670, 71326807, 19666268),
    (873982746, 96422615, 37163206), (812697218, 122807685, 63464312), (746827626, 148305041, 99533137),
    (678734282, 170774542, 145315154), (610611522, 188484738, 199759078), (544313348, 200357777, 261044606),
    (481271194, 206042749, 326914198), (422484487, 205836576, 395007542), (368559312, 200510289, 463130302),
    (319772662, 191105287, 529428476), (276145125, 178748889, 592470630), (237510851, 164515625, 651257337),
    (203578646, 149340715, 705182512), (173981732, 133979451, 753969162), (148316011, 119000593, 797596699),
    (126167990, 104801295, 836230973), (107134045, 91633155, 870163178), (90832854, 79631901, 899760092),
    (76912651, 68846032, 925425813), (65054728, 59261929, 947573834), (54974334, 50824453, 966607779),
    (46419835, 43452991, 982908970), (39170814, 37053413, 996829173), (33035563, 31526602, 1008687096),
    (27848300, 26774267, 1018767490), (23466343, 22702671, 1027321989), (19767364, 19224844, 1034571010),
    (16646824, 16261697, 1040706261), (14015623, 13742397, 1045893524), (11797988, 11604250, 1050275481),
    (9929595, 9792281, 1053974460), (8355925, 8258639, 1057095000), (7030831, 6961925, 1059726201),
    (5915288, 5866496, 1061943836), (4976329, 4941788, 1063812229), (4186123, 4161674, 1065385899),
    (3521189, 3503887, 1066710993), (2961729, 2949486, 1067826536), (2491054, 2482392, 1068765495),
)
_COUNT_SHIFT = 10  # counts in units of 2^-20


def scale_of_index(index):
    """The Laplace scale of table ``index`` (float; what training models, never what codes)."""
    return 2.0 ** (np.asarray(index, np.float64) / 4.0 - 4.0)


@lru_cache(maxsize=1)
def table_bank() -> np.ndarray:
    """[SCALES, ALPHABET] float64 counts (integers, at least 1) of residuals -RESIDUAL_BOUND.."""
    bank = np.zeros((SCALES, ALPHABET), np.int64)
    for k, (q0, q1, rho) in enumerate(_LAPLACE):
        bank[k, RESIDUAL_BOUND] = max(1, q0 >> _COUNT_SHIFT)
        mass = q1
        for r in range(1, RESIDUAL_BOUND + 1):
            count = max(1, mass >> _COUNT_SHIFT)
            bank[k, RESIDUAL_BOUND + r] = bank[k, RESIDUAL_BOUND - r] = count
            mass = (mass * rho) >> 30
    return bank.astype(np.float64)


@lru_cache(maxsize=1)
def bank_log2() -> np.ndarray:
    """[SCALES, ALPHABET] log2 of each table's probabilities: for code lengths, never for coding."""
    bank = table_bank()
    return np.log2(bank / bank.sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class LatentContext:
    """The nine integers of one latent tensor's context model (6 fractional bits each)."""

    mean_weights: tuple[int, ...]  # W_k, one per feature
    scale_weights: tuple[int, ...]  # V_k
    scale_bias: int  # S

    def __post_init__(self) -> None:
        values = (*self.mean_weights, *self.scale_weights, self.scale_bias)
        if len(self.mean_weights) != FEATURES or len(self.scale_weights) != FEATURES:
            raise ValueError(f"a latent context has {FEATURES} mean and {FEATURES} scale weights")
        if any(not isinstance(v, int) or abs(v) >= PARAM_BOUND for v in values):
            raise ValueError("latent context parameters are integers within +-32767")

    @classmethod
    def of(cls, mean_weights, scale_weights, scale_bias) -> LatentContext:
        """From real-valued parameters (what training learned), rounded to the stored integers."""
        def fixed(v) -> int:
            return int(np.clip(np.rint(float(v) * (1 << FRACTION_BITS)), 1 - PARAM_BOUND, PARAM_BOUND - 1))

        return cls(tuple(fixed(v) for v in mean_weights), tuple(fixed(v) for v in scale_weights), fixed(scale_bias))

    def write(self, w: ByteWriter) -> None:
        for v in (*self.mean_weights, *self.scale_weights, self.scale_bias):
            w.svarint(v)

    @classmethod
    def read(cls, r: ByteReader) -> LatentContext:
        values = [r.svarint(PARAM_BOUND - 1) for _ in range(2 * FEATURES + 1)]
        return cls(tuple(values[:FEATURES]), tuple(values[FEATURES:-1]), values[-1])

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``features`` [FEATURES, ...] int64 -> (mean, table index), int64 arrays of the rest's shape."""
        w = np.array(self.mean_weights, np.int64).reshape((FEATURES,) + (1,) * (features.ndim - 1))
        v = np.array(self.scale_weights, np.int64).reshape(w.shape)
        mean = ((w * features).sum(axis=0) + _HALF) >> FRACTION_BITS
        index = (self.scale_bias + (v * np.abs(features)).sum(axis=0) + _HALF) >> FRACTION_BITS
        return np.clip(mean, -LATENT_BOUND, LATENT_BOUND), np.clip(index, 0, SCALES - 1)


def context_features(y: np.ndarray) -> np.ndarray:
    """[FEATURES, T, C, H, W] int64: each symbol's four already-decoded neighbours (0 outside)."""
    y = np.clip(y.astype(np.int64), -LATENT_BOUND, LATENT_BOUND)
    T, C, H, W = y.shape
    f = np.zeros((FEATURES, T, C, H, W), np.int64)
    f[0, 1:] = y[:-1]
    f[1, :, :, 1:] = y[:, :, :-1]
    f[2, :, :, 1:, 1:] = y[:, :, :-1, :-1]
    f[3, :, :, 1:, :-1] = y[:, :, :-1, 1:]
    return f


def _row_features(previous: np.ndarray | None, above: np.ndarray | None, C: int, W: int) -> np.ndarray:
    """The features of one row ``(t, i)`` from the co-located row of frame ``t-1`` and row ``i-1``."""
    f = np.zeros((FEATURES, C, W), np.int64)
    if previous is not None:
        f[0] = np.clip(previous, -LATENT_BOUND, LATENT_BOUND)
    if above is not None:
        a = np.clip(above, -LATENT_BOUND, LATENT_BOUND)
        f[1] = a
        f[2, :, 1:] = a[:, :-1]
        f[3, :, :-1] = a[:, 1:]
    return f


_MODEL = constriction.stream.model.Categorical(perfect=False)


def encode_latents(symbols: np.ndarray, context: LatentContext) -> bytes:
    """Range-codes a [T, C, H, W] tensor of symbols within +-LATENT_BOUND into its own stream,
    row by row (format version 3); little-endian words."""
    if symbols.ndim != 4 or int(np.abs(symbols).max(initial=0)) > LATENT_BOUND:
        raise ValueError(f"latent symbols are a [T, C, H, W] array within +-{LATENT_BOUND}")
    encoder = constriction.stream.queue.RangeEncoder()
    if symbols.size:
        mean, index = context.predict(context_features(symbols))
        residual = symbols.astype(np.int64) - mean + RESIDUAL_BOUND
        bank = table_bank()
        for t in range(symbols.shape[0]):  # decode order: rows, then channels, then columns
            r = residual[t].transpose(1, 0, 2).reshape(-1)
            k = index[t].transpose(1, 0, 2).reshape(-1)
            encoder.encode(r.astype(np.int32), _MODEL, bank[k])
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_latents(data: bytes, shape: tuple[int, int, int, int], context: LatentContext) -> np.ndarray:
    """The inverse of :func:`encode_latents`: int32 symbols of ``shape`` from their own stream."""
    T, C, H, W = shape
    out = np.zeros(shape, np.int64)
    if out.size == 0:
        return out.astype(np.int32)
    if len(data) % 4 or not data:
        raise BitstreamError("corrupt latent payload: not a whole number of 32-bit words")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    bank = table_bank()
    try:
        for t in range(T):
            for i in range(H):
                f = _row_features(out[t - 1, :, i] if t else None, out[t, :, i - 1] if i else None, C, W)
                mean, index = context.predict(f)
                r = decoder.decode(_MODEL, bank[index.reshape(-1)]).astype(np.int64)
                out[t, :, i] = mean + r.reshape(C, W) - RESIDUAL_BOUND
    except (AssertionError, ValueError, RuntimeError) as exc:  # constriction's ways of refusing invalid data
        raise BitstreamError(f"corrupt latent payload: {exc}") from None
    if not decoder.maybe_exhausted():
        raise BitstreamError("corrupt latent payload: bytes left after its symbols")
    if int(np.abs(out).max()) > LATENT_BOUND:
        raise BitstreamError(f"corrupt latent payload: a symbol beyond +-{LATENT_BOUND}")
    return out.astype(np.int32)


# --- version 4: rows on the same diagonal of (frame, row) coded together ------------------------
#
# A row's context is the row above it and the same row of the previous latent frame, so every row
# (t, i) with t + i = d depends only on rows of diagonal d - 1: a diagonal is decoded in one
# vectorised step (T + H - 1 steps instead of T x H rows). Within a diagonal the symbols go in
# order of their table index, then (frame, channel, row, column), each run of one index coded with
# that table's model, built once.


@lru_cache(maxsize=1)
def _bank_models() -> tuple:
    bank = table_bank()
    return tuple(constriction.stream.model.Categorical(bank[k], perfect=False) for k in range(SCALES))


def _diagonal(d: int, T: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """The frames and rows (t, i) with t + i = d."""
    t = np.arange(max(0, d - H + 1), min(d, T - 1) + 1)
    return t, d - t


def _runs(index: np.ndarray):
    """(order, [(table, start, stop)...]): the symbols of a diagonal sorted by table index (stably),
    and the runs of one index in that order."""
    order = np.argsort(index, kind="stable")
    ks = index[order]
    cuts = np.flatnonzero(np.diff(ks)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [ks.size]])
    return order, [(int(ks[a]), int(a), int(b)) for a, b in zip(starts, stops)]


def encode_latent_diagonals(symbols: np.ndarray, context: LatentContext, encoder) -> None:
    """Appends a [T, C, H, W] tensor of symbols within +-LATENT_BOUND to ``encoder`` (a
    ``constriction.stream.queue.RangeEncoder``) diagonal by diagonal (format version 4)."""
    if symbols.ndim != 4 or int(np.abs(symbols).max(initial=0)) > LATENT_BOUND:
        raise ValueError(f"latent symbols are a [T, C, H, W] array within +-{LATENT_BOUND}")
    if not symbols.size:
        return
    T, C, H, W = symbols.shape
    mean, index = context.predict(context_features(symbols))
    residual = (symbols.astype(np.int64) - mean + RESIDUAL_BOUND).astype(np.int32)
    models = _bank_models()
    for d in range(T + H - 1):
        t, i = _diagonal(d, T, H)
        order, runs = _runs(index[t, :, i].reshape(-1))
        r = residual[t, :, i].reshape(-1)[order]
        for k, a, b in runs:
            encoder.encode(r[a:b], models[k])


def decode_latent_diagonals(shape: tuple[int, int, int, int], context: LatentContext, decoder) -> np.ndarray:
    """The inverse of :func:`encode_latent_diagonals`: int32 symbols of ``shape`` from where
    ``decoder`` (a ``constriction.stream.queue.RangeDecoder``) stands."""
    T, C, H, W = shape
    if not T * C * H * W:
        return np.zeros(shape, np.int32)
    # Padded by one frame before, one row above and one column each side (zeros: outside).
    out = np.zeros((T + 1, C, H + 1, W + 2), np.int64)
    models = _bank_models()
    try:
        for d in range(T + H - 1):
            t, i = _diagonal(d, T, H)
            above = out[t + 1, :, i]  # row i - 1 of frame t, [n, C, W + 2]
            f = np.stack([out[t, :, i + 1, 1 : W + 1], above[..., 1 : W + 1], above[..., : W], above[..., 2:]])
            mean, index = context.predict(f)
            order, runs = _runs(index.reshape(-1))
            r = np.empty(index.size, np.int64)
            for k, a, b in runs:
                r[order[a:b]] = decoder.decode(models[k], b - a)
            out[t + 1, :, i + 1, 1 : W + 1] = mean + r.reshape(mean.shape) - RESIDUAL_BOUND
    except (AssertionError, ValueError, RuntimeError) as exc:  # constriction's ways of refusing invalid data
        raise BitstreamError(f"corrupt latent payload: {exc}") from None
    symbols = out[1:, :, 1:, 1 : W + 1]
    if int(np.abs(symbols).max()) > LATENT_BOUND:
        raise BitstreamError(f"corrupt latent payload: a symbol beyond +-{LATENT_BOUND}")
    return symbols.astype(np.int32)


def latent_bits(symbols: np.ndarray, context: LatentContext) -> float:
    """Ideal code length (bits) of ``symbols`` under the context model: what the coder reaches
    to within a few words."""
    mean, index = context.predict(context_features(symbols))
    residual = symbols.astype(np.int64) - mean + RESIDUAL_BOUND
    return float(-bank_log2()[index, residual].sum())
