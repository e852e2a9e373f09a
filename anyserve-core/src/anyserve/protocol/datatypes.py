"""The KServe v2 datatypes: where each one lives in a message and how it packs raw.

One table serves every codec (Python values, KServe v2 JSON, the binary
tensor extension) in both directions, so no two of them can disagree about
a field name, a struct format or a byte order. FP16 and BF16 have no typed
contents field: they travel raw only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from anyserve.errors import InvalidRequest
from anyserve.protocol.names import CONTENT_TYPE_PARAMETER, STR_CONTENT_TYPE

__all__ = [
    "BYTES",
    "CONTENT_FIELDS",
    "CONTENT_TYPE_PARAMETER",
    "DATATYPES",
    "STR_CONTENT_TYPE",
    "DataType",
    "TensorError",
    "lookup",
    "pack_bytes",
    "pack_raw",
    "unpack_bytes",
    "unpack_raw",
]

BYTES = "BYTES"
#: Every typed contents field of ``InferTensorContents``.
CONTENT_FIELDS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)


class TensorError(InvalidRequest, ValueError):
    """A value cannot become a tensor, or a tensor cannot become a value.

    It is an :class:`~anyserve.errors.InvalidRequest` (gRPC INVALID_ARGUMENT)
    so it crosses process boundaries like every anyserve error, and a
    ``ValueError`` so plain Python callers can catch it as the bad value it is.
    """


@dataclass(frozen=True)
class DataType:
    """Everything the codec needs to know about one KServe datatype."""

    name: str
    #: ``InferTensorContents`` field holding it; ``None`` when it travels raw only (FP16).
    field: str | None
    #: ``struct`` format character of one element, little-endian; ``""`` for BYTES.
    fmt: str
    #: numpy dtype string (explicitly little-endian) used when decoding to arrays.
    numpy: str
    #: Inclusive range of an integer type, checked on encode.
    bounds: tuple[int, int] | None = None
    #: Which plain values are acceptable: "bool", "int", "float" or "bytes".
    kind: str = "float"

    @property
    def itemsize(self) -> int:
        return struct.calcsize("<" + self.fmt) if self.fmt else 0


def _int(name: str, field: str, fmt: str, bits: int, signed: bool) -> DataType:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return DataType(name, field, fmt, f"<{'i' if signed else 'u'}{bits // 8}", (low, high), kind="int")


DATATYPES: dict[str, DataType] = {
    dt.name: dt
    for dt in (
        DataType("BOOL", "bool_contents", "?", "|b1", kind="bool"),
        _int("INT8", "int_contents", "b", 8, True),
        _int("INT16", "int_contents", "h", 16, True),
        _int("INT32", "int_contents", "i", 32, True),
        _int("INT64", "int64_contents", "q", 64, True),
        _int("UINT8", "uint_contents", "B", 8, False),
        _int("UINT16", "uint_contents", "H", 16, False),
        _int("UINT32", "uint_contents", "I", 32, False),
        _int("UINT64", "uint64_contents", "Q", 64, False),
        DataType("FP16", None, "e", "<f2"),
        # BF16 is the upper 16 bits of a float32; numpy has no such type, so arrays of it are float32.
        DataType("BF16", None, "H", "<f4"),
        DataType("FP32", "fp32_contents", "f", "<f4"),
        DataType("FP64", "fp64_contents", "d", "<f8"),
        DataType(BYTES, "bytes_contents", "", "object", kind="bytes"),
    )
}


def lookup(datatype: str) -> DataType:
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise TensorError(f"unknown tensor datatype {datatype!r}; known: {', '.join(DATATYPES)}") from None


def pack_bytes(elements: Iterable[bytes]) -> bytes:
    """BYTES as raw contents: each element a 4-byte little-endian length, then its bytes (Triton's layout)."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def unpack_bytes(raw: bytes, what: str) -> list[bytes]:
    """The inverse of :func:`pack_bytes`; a truncated buffer is an error, never a silent short read."""
    view = memoryview(raw)
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise TensorError(f"{what}: raw BYTES contents end inside a length prefix at byte {offset}")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise TensorError(f"{what}: raw BYTES element of {length} bytes overruns the buffer at byte {offset}")
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    return elements


def _bf16_bits(value: float) -> int:
    """The upper 16 bits of a float32, rounded to nearest even."""
    (bits,) = struct.unpack("<I", struct.pack("<f", value))
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def _bf16_value(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits << 16))[0])


def pack_raw(dt: DataType, values: Sequence[Any]) -> bytes:
    """Plain elements (already checked) as KServe raw contents: little-endian, BYTES length-prefixed."""
    if dt.name == BYTES:
        return pack_bytes(values)
    if dt.name == "BF16":
        values = [_bf16_bits(v) for v in values]
    return struct.pack(f"<{len(values)}{dt.fmt}", *values)


def unpack_raw(dt: DataType, raw: bytes, what: str = "tensor") -> list[Any]:
    """KServe raw contents as plain elements; :class:`TensorError` when the bytes do not fit the type."""
    if dt.name == BYTES:
        return unpack_bytes(raw, what)
    if len(raw) % dt.itemsize:
        raise TensorError(
            f"{what}: {len(raw)} raw bytes are not a whole number of {dt.itemsize}-byte {dt.name} elements"
        )
    values = list(struct.unpack(f"<{len(raw) // dt.itemsize}{dt.fmt}", raw))
    if dt.name == "BF16":
        values = [_bf16_value(v) for v in values]
    return values
