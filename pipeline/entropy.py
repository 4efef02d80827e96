"""Entropy coding of integer symbols with constriction's range coder.

A :class:`SymbolModel` is built from integer counts, which is all the bitstream
stores of it; encoder and decoder turn the counts into float64 the same way and
build the categorical model with ``perfect=False``, so both sides get bit-identical
probabilities on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import constriction
import numpy as np

MAX_ALPHABET = 1 << 16  # enough for 16-bit symbols


@dataclass(frozen=True, eq=False)
class SymbolModel:
    """Counts of the symbols ``offset, offset+1, ...`` (an empirical distribution)."""

    offset: int
    counts: np.ndarray  # int64, at least one nonzero

    @classmethod
    def from_symbols(cls, symbols: np.ndarray) -> SymbolModel:
        if symbols.size == 0:
            return cls(0, np.ones(1, np.int64))
        low, high = int(symbols.min()), int(symbols.max())
        counts = np.bincount((symbols.astype(np.int64) - low).ravel(), minlength=high - low + 1)
        return cls(low, counts.astype(np.int64))

    @property
    def alphabet(self) -> int:
        return int(self.counts.shape[0])

    @property
    def is_constant(self) -> bool:
        """A one-symbol alphabet: every symbol is known, nothing needs coding."""
        return self.alphabet == 1

    def covers(self, symbols: np.ndarray) -> bool:
        if symbols.size == 0:
            return True
        return int(symbols.min()) >= self.offset and int(symbols.max()) < self.offset + self.alphabet

    @cached_property
    def _categorical(self):
        return constriction.stream.model.Categorical(self.counts.astype(np.float64), perfect=False)

    def ideal_bits(self, symbols: np.ndarray) -> float:
        """Code length in bits of ``symbols`` under this model (the cross-entropy)."""
        if self.is_constant or symbols.size == 0:
            return 0.0
        # Symbols with zero count still get a tiny probability in the coder.
        p = np.maximum(self.counts, 1e-3) / self.counts.sum()
        return float(-np.log2(p[symbols.ravel() - self.offset]).sum())

    def encode(self, symbols: np.ndarray) -> bytes:
        """Codes int symbols (all covered by the model) into little-endian 32-bit words."""
        if self.is_constant or symbols.size == 0:
            return b""
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode((symbols.ravel() - self.offset).astype(np.int32), self._categorical)
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, count: int) -> np.ndarray:
        """The inverse of :meth:`encode`: ``count`` int32 symbols."""
        if self.is_constant or count == 0:
            return np.full(count, self.offset, np.int32)
        if len(data) % 4:
            raise ValueError("a range-coded payload is a whole number of 32-bit words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        decoder = constriction.stream.queue.RangeDecoder(words)
        return decoder.decode(self._categorical, count).astype(np.int32) + np.int32(self.offset)


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """``n * H(p)`` with ``p`` the symbols' own histogram: the bound a coder aims at."""
    return SymbolModel.from_symbols(symbols).ideal_bits(symbols)
