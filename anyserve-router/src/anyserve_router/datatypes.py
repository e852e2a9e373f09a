"""The KServe v2 datatypes as the router's JSON bridge needs them.

The table is core's (:mod:`anyserve.tensors.datatypes`: contents field,
little-endian ``struct`` format, acceptable JSON kind, integer range) plus
BF16. FP16 and BF16 have no contents field, so a request holding them
travels entirely raw.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from anyserve.tensors.datatypes import DATATYPES as CORE_DATATYPES
from anyserve.tensors.datatypes import DataType, pack_bytes, unpack_bytes

BYTES = "BYTES"

#: Core's table, plus BF16, which JSON clients may send (it travels raw only:
#: the upper 16 bits of a float32).
DATATYPES: dict[str, DataType] = {**CORE_DATATYPES, "BF16": DataType("BF16", None, "H", "<u2", kind="float")}

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
        return pack_bytes(values)
    if dt.name == "BF16":
        values = [_bf16_bits(v) for v in values]
    return struct.pack(f"<{len(values)}{dt.fmt}", *values)


def unpack_raw(dt: DataType, raw: bytes) -> list[Any]:
    """KServe raw contents as elements; ``ValueError`` when the bytes do not fit the type."""
    if dt.name == BYTES:
        return list(unpack_bytes(raw, "BYTES"))
    if len(raw) % dt.itemsize:
        raise ValueError(f"{len(raw)} raw bytes are not a whole number of {dt.itemsize}-byte {dt.name} elements")
    values = list(struct.unpack(f"<{len(raw) // dt.itemsize}{dt.fmt}", raw))
    if dt.name == "BF16":
        values = [_bf16_value(v) for v in values]
    return values
