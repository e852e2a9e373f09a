"""The KServe v2 binary tensor extension: a JSON header, then tensor bytes, in one HTTP body.

``Inference-Header-Content-Length: N`` says the body's first N bytes are the
JSON request (or response) and the rest is tensor data, each binary tensor
taking the next ``binary_data_size`` bytes in the order the JSON lists it.
Triton's and KServe's HTTP clients send inputs this way by default and ask
for outputs the same way (``binary_data_output`` for all outputs, or
``binary_data`` on one requested output), because JSON lists of numbers
cost far more to write and read than the bytes themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from anyserve.errors import InvalidRequest
from anyserve.protocol import messages as pb
from anyserve.protocol.names import BINARY_DATA, BINARY_DATA_OUTPUT, HEADER_LENGTH_HEADER

#: Digits a header length may have: 18 already exceed any body a server accepts.
_MAX_LENGTH_DIGITS = 18


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` value, ``None`` when absent.

    Only ASCII digits, and not too many: ``str.isdigit`` also takes digits
    such as ``"²"`` that ``int`` refuses, and ``int`` of thousands of digits
    raises Python's own digit-limit error instead of saying what was wrong.
    """
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_LENGTH_DIGITS):
        shown = value if len(value) <= 40 else f"{value[:40]}... ({len(value)} characters)"
        raise InvalidRequest(
            f"{HEADER_LENGTH_HEADER} must be a non-negative integer of at most {_MAX_LENGTH_DIGITS} digits, "
            f"got {shown!r}"
        )
    return int(text)


class BinaryPart:
    """The binary part of a body, handed out tensor by tensor."""

    __slots__ = ("_data", "_offset", "header")

    def __init__(self, header: bytes, data: memoryview) -> None:
        self.header = header
        self._data = data
        self._offset = 0

    @classmethod
    def split(cls, body: bytes, header_length: int) -> BinaryPart:
        if header_length > len(body):
            raise InvalidRequest(f"{HEADER_LENGTH_HEADER} is {header_length} but the body has only {len(body)} bytes")
        view = memoryview(body)
        return cls(bytes(view[:header_length]), view[header_length:])

    def take(self, size: int, where: str) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            left = len(self._data) - self._offset
            raise InvalidRequest(f"{where}: binary_data_size is {size} but only {left} bytes of binary data are left")
        chunk = bytes(self._data[self._offset : end])
        self._offset = end
        return chunk

    def check_used(self) -> None:
        """Bytes no tensor claimed mean the sizes and the body disagree: refuse rather than guess."""
        left = len(self._data) - self._offset
        if left:
            raise InvalidRequest(
                f"{left} bytes of binary data follow the JSON but no input's binary_data_size claims them"
            )


def _flag(parameters: object, name: str) -> bool | None:
    param = parameters.get(name)  # type: ignore[attr-defined]
    if param is None or param.WhichOneof("parameter_choice") != "bool_param":
        return None
    return bool(param.bool_param)


@dataclass(frozen=True, slots=True)
class BinaryWanted:
    """Which outputs a request asked to receive as binary data."""

    everything: bool
    named: frozenset[str]
    refused: frozenset[str]

    @classmethod
    def from_request(cls, request: pb.ModelInferRequest) -> BinaryWanted | None:
        """``None`` when the request asks for no binary output (a plain JSON answer)."""
        if not request.parameters and not request.outputs:
            return None
        everything = bool(_flag(request.parameters, BINARY_DATA_OUTPUT))
        named: set[str] = set()
        refused: set[str] = set()
        for wanted in request.outputs:
            flag = _flag(wanted.parameters, BINARY_DATA)
            if flag is True:
                named.add(wanted.name)
            elif flag is False:
                refused.add(wanted.name)
        if not everything and not named:
            return None
        return cls(everything, frozenset(named), frozenset(refused))

    def wants(self, name: str) -> bool:
        """An output's own ``binary_data`` wins over the request's ``binary_data_output``."""
        if name in self.named:
            return True
        return self.everything and name not in self.refused


def join(header: bytes, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A body of ``header`` and ``blobs``, and the header that says where the JSON ends."""
    return header + b"".join(blobs), {HEADER_LENGTH_HEADER: str(len(header))}
