"""The KServe v2 datatypes as the router's JSON bridge needs them.

Per datatype: which ``InferTensorContents`` field carries it, how one element
packs into ``raw_*_contents`` (little-endian ``struct`` format), which JSON
values are acceptable and, for integers, the range. FP16 and BF16 have no
contents field, so a request holding them travels entirely raw.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BYTES = "BYTES"


@dataclass(frozen=True)
class DataType:
    name: str
    #: ``InferTensorContents`` field; ``None`` when the type travels raw only.
    field: str | None
    #: ``struct`` format of one element (``""`` for BYTES, ``"H"`` for BF16's bits).
    fmt: str
    #: "bool", "int", "float" or "bytes": which JSON values are acceptable.
    kind: str
    bounds: tuple[int, int] | None = None

    @property
    def itemsize(self) -> int:
        return struct.calcsize("<" + self.fmt) if self.fmt else 0


def _int(name: str, field: str, fmt: str, bits: int, signed: bool) -> DataType:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return DataType(name, field, fmt, "int", (low, high))


DATATYPES: dict[str, DataType] = {
    dt.name: dt
    for dt in (
        DataType("BOOL", "bool_contents", "?", "bool"),
        _int("INT8", "int_contents", "b", 8, True),
        _int("INT16", "int_contents", "h", 16, True),
        _int("INT32", "int_contents", "i", 32, True),
        _int("INT64", "int64_contents", "q", 64, True),
        _int("UINT8", "uint_contents", "B", 8, False),
        _int("UINT16", "uint_contents", "H", 16, False),
        _int("UINT32", "uint_contents", "I", 32, False),
        _int("UINT64", "uint64_contents", "Q", 64, False),
        DataType("FP16", None, "e", "float"),
        DataType("BF16", None, "H", "float"),
        DataType("FP32", "fp32_contents", "f", "float"),
        DataType("FP64", "fp64_contents", "d", "float"),
        DataType(BYTES, "bytes_contents", "", "bytes"),
    )
}

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


def _bf16_bits(value: float) -> int:
    """The upper 16 bits of a float32, rounded to nearest even."""
    (bits,) = struct.unpack("<I", struct.pack("<f", value))
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def _bf16_value(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits << 16))[0]


def pack_raw(dt: DataType, values: Sequence[Any]) -> bytes:
    """Elements (already validated) as KServe raw contents."""
    if dt.name == BYTES:
        return b"".join(struct.pack("<I", len(v)) + v for v in values)
    if dt.name == "BF16":
        values = [_bf16_bits(v) for v in values]
    return struct.pack(f"<{len(values)}{dt.fmt}", *values)


def unpack_raw(dt: DataType, raw: bytes) -> list[Any]:
    """KServe raw contents as elements; ``ValueError`` when the bytes do not fit the type."""
    if dt.name == BYTES:
        out: list[Any] = []
        view, pos = memoryview(raw), 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise ValueError(f"truncated BYTES length prefix at offset {pos}")
            (size,) = struct.unpack_from("<I", view, pos)
            pos += 4
            if pos + size > len(raw):
                raise ValueError(f"BYTES element of {size} bytes at offset {pos} runs past the end")
            out.append(bytes(view[pos : pos + size]))
            pos += size
        return out
    if len(raw) % dt.itemsize:
        raise ValueError(f"{len(raw)} raw bytes are not a whole number of {dt.itemsize}-byte {dt.name} elements")
    values = list(struct.unpack(f"<{len(raw) // dt.itemsize}{dt.fmt}", raw))
    if dt.name == "BF16":
        values = [_bf16_value(v) for v in values]
    return values
