"""The bound on what a tensor's shape may describe, checked in O(rank) before anything is allocated.

A shape is a few bytes on the wire but says how much a decoder builds:
``[10000000, 0]`` holds no element, yet its nested-list form is ten million
empty lists, which nobody paid for in bytes. Every codec (KServe v2 JSON and
its binary extension, protobuf requests as the router and the worker parse
them, the tensor codec handlers and clients decode with) asks
:func:`tensor_elements` first, so such a shape is an INVALID_ARGUMENT that
names the tensor, whatever front it came through.

Three bounds:

- the **rank** (dimensions, and so the nesting depth of nested data) is at
  most :data:`MAX_TENSOR_RANK`;
- the **extent**, the product of the dimensions with every ``0`` counted as
  ``1``, is at most the configured element limit (``replica.max_tensor_elements``),
  so a zero cannot hide the size of the other dimensions;
- a tensor **without elements** describes at most :data:`MAX_EMPTY_ROWS`
  empty lists (the product of its dimensions before the first ``0``): those
  cost memory that no byte of the request paid for.

The element count itself must then match the data actually present; each
codec checks that against its bytes before unpacking them.

The limit is process-wide: a replica and each of its workers set it from
their settings at start-up (:func:`set_max_tensor_elements`); elsewhere (the
router's fronts, a client decoding a response) the default holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from anyserve.protocol.datatypes import TensorError

#: Dimensions a tensor may have. numpy 1.x allows 32; no model input comes close.
MAX_TENSOR_RANK = 32
#: Empty lists a tensor without elements may decode to (``[65536, 0]`` is the largest such ``[n, 0]``).
MAX_EMPTY_ROWS = 65_536
#: As many one-byte elements as the largest message (``replica.max_message_bytes``, 64 MiB) can hold:
#: no tensor that fits in a message is refused for its element count alone.
DEFAULT_MAX_TENSOR_ELEMENTS = 64 * 1024 * 1024

SETTING = "replica.max_tensor_elements"

_limit = DEFAULT_MAX_TENSOR_ELEMENTS


def set_max_tensor_elements(limit: int) -> None:
    """Set this process's element limit (a replica and its workers do, from ``replica.max_tensor_elements``)."""
    global _limit
    if type(limit) is not int or limit < 1:
        raise ValueError(f"{SETTING} must be a positive integer, got {limit!r}")
    _limit = limit


def max_tensor_elements() -> int:
    """This process's element limit."""
    return _limit


def check_rank(rank: int, where: str) -> None:
    """Refuse more than :data:`MAX_TENSOR_RANK` dimensions (or nesting levels), before reading any of them."""
    if rank > MAX_TENSOR_RANK:
        raise TensorError(f"{where}: shape has {rank} dimensions; at most {MAX_TENSOR_RANK} are accepted")


def tensor_elements(shape: Sequence[int], where: str, limit: int | None = None) -> int:
    """The number of elements ``shape`` holds; :class:`TensorError` (INVALID_ARGUMENT) past the bounds.

    ``limit`` defaults to this process's :func:`max_tensor_elements`. The
    product is checked as it is built, so a shape of huge dimensions costs
    no more than a small one.
    """
    limit = _limit if limit is None else limit
    if len(shape) <= MAX_TENSOR_RANK and (not shape or min(shape) > 0):
        # Every request's inputs pass here: without a zero or a negative, extent and elements are one product.
        elements = prod(shape)
        if elements <= limit:
            return elements
    check_rank(len(shape), where)
    extent = 1
    elements = 1
    rows = 1  # empty lists the nested form holds when there is a zero: the product before the first one
    for dim in shape:
        if dim < 0:
            raise TensorError(f"{where}: shape {list(shape)} has a negative dimension")
        extent *= dim or 1
        if extent > limit:
            raise TensorError(
                f"{where}: shape {list(shape)} describes more than {limit:,} elements (zero dimensions "
                f"counted as one); at most {limit:,} are accepted ({SETTING})"
            )
        if elements:
            rows = elements
        elements *= dim
    if elements == 0 and rows > MAX_EMPTY_ROWS:
        raise TensorError(
            f"{where}: shape {list(shape)} holds no elements but describes {rows:,} empty rows; "
            f"a tensor without elements may describe at most {MAX_EMPTY_ROWS:,}"
        )
    return elements
