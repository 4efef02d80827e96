"""Little-endian byte writing and bounds-checked reading, shared by the container and the entropy models.

Every read is checked against the bytes that are really there, and every varint against a limit the
caller gives, so that a damaged file is refused with a :class:`BitstreamError` before anything is
allocated from a value it declares.
"""

from __future__ import annotations

import struct

from pipeline.errors import BitstreamError


class ByteWriter:
    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0

    def raw(self, data: bytes) -> None:
        self._parts.append(data)
        self.size += len(data)

    def pack(self, fmt: str, *values) -> None:
        self.raw(struct.pack("<" + fmt, *values))

    def varint(self, value: int) -> None:
        """Unsigned LEB128."""
        if value < 0:
            raise ValueError("varint of a negative number")
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
        self.raw(bytes(out))

    def svarint(self, value: int) -> None:
        """Signed varint (zig-zag)."""
        self.varint(value * 2 if value >= 0 else -value * 2 - 1)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class ByteReader:
    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def raw(self, n: int) -> bytes:
        if n < 0 or n > self.remaining:
            raise BitstreamError(f"truncated or corrupt {self._what}: needs {n} more bytes, has {self.remaining}")
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    def unpack(self, fmt: str):
        fmt = "<" + fmt
        return struct.unpack(fmt, self.raw(struct.calcsize(fmt)))

    def varint(self, limit: int) -> int:
        """Reads an unsigned varint and checks it is at most ``limit``."""
        value, shift = 0, 0
        for _ in range(10):
            (byte,) = self.raw(1)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > limit:
                    raise BitstreamError(f"corrupt {self._what}: value {value} exceeds {limit}")
                return value
            shift += 7
        raise BitstreamError(f"corrupt {self._what}: overlong varint")

    def svarint(self, limit: int) -> int:
        z = self.varint(2 * limit + 1)
        return z // 2 if z % 2 == 0 else -(z + 1) // 2
