"""A prompt's chained block hashes, the keys of the ``prefix`` scorer's index, and a memo of recent prompts'.

Hashing is the larger part of a prefix-aware decision (about 0.35 µs a
block in CPython: a slice and two checksum calls), and the prompts a
router sees mostly begin alike: one system prompt for many users, a
conversation that grows by a turn. So :class:`PrefixMemo` keeps the hashes
of the latest prompt per first block, and a prompt that shares whole
blocks with it hashes only the blocks after them.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict

#: Blocks hashed at most per request: a longer prompt's tail never decides where it goes.
MAX_BLOCKS = 256
#: Prompts :class:`PrefixMemo` keeps, and the bytes of prompt text it holds at most, whatever the block size.
MEMO_ENTRIES = 64
MEMO_BYTES = 4 * 1024 * 1024
_LOW = 0xFFFFFFFF


def block_hashes(text: str, block_chars: int, limit: int = MAX_BLOCKS) -> tuple[int, ...]:
    """Chained 64-bit hashes of ``text``'s whole blocks of ``block_chars`` bytes (of its UTF-8).

    Block *i*'s hash covers blocks 0..i, so two prompts share a hash only
    where they share everything before it: the shape of an engine's prefix
    cache. It is CRC-32 and Adler-32 of the whole prefix, side by side: run
    on for each block, in C, a few times cheaper per request than a
    cryptographic hash, and keyed by nothing process-specific (unlike
    ``hash()``), so a saved index means the same after a restart. A routing
    hint needs no more: a rare collision only sends a request where its
    prefix is not cached. A partial last block is left out: it is what the
    next turn is likely to change.
    """
    data = text.encode("utf-8", "surrogatepass")
    step = max(1, block_chars)
    return _chain(data, 0, min(len(data), step * limit) // step * step, step, 1, 1)


def _chain(data: bytes, start: int, end: int, step: int, crc: int, adler: int) -> tuple[int, ...]:
    """The hashes of ``data``'s blocks from ``start`` to ``end``, running on from the checksums of the blocks before."""
    crc32, adler32 = zlib.crc32, zlib.adler32
    out: list[int] = []
    for at in range(start, end, step):
        block = data[at : at + step]
        crc = crc32(block, crc)
        adler = adler32(block, adler)
        out.append(crc << 32 | adler)
    return tuple(out)


def _shared_blocks(data: bytes, earlier: bytes, step: int, most: int) -> int:
    """How many whole blocks, at most ``most``, ``data`` and ``earlier`` begin with alike.

    A binary search of ``startswith``: equal prefixes stay equal when
    shortened, and each comparison is a memcmp in C.
    """
    if data.startswith(earlier[: most * step]):
        return most  # the usual case: the same prompt again, or the next turn of one conversation
    low, high = 0, most - 1  # found: the first ``low`` blocks are alike; ``high + 1`` blocks are not
    while low < high:
        middle = (low + high + 1) // 2
        if data.startswith(earlier[: middle * step]):
            low = middle
        else:
            high = middle - 1
    return low


class PrefixMemo:
    """Block hashes of recent prompts, by block size and first block; a prompt hashes only what is new in it.

    Bounded by ``entries`` prompts and ``max_bytes`` of their text, the
    least recently met dropped first. Prompts that begin alike share an
    entry, which holds the latest of them: the shared system prompt of many
    users is hashed once, and only each request's own tail again.
    """

    def __init__(self, entries: int = MEMO_ENTRIES, max_bytes: int = MEMO_BYTES) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self._bytes = 0
        #: (block size, first block) -> (the prompt's whole blocks, their hashes).
        self._recent: OrderedDict[tuple[int, bytes], tuple[bytes, tuple[int, ...]]] = OrderedDict()

    def hashes(self, text: str, block_chars: int, limit: int = MAX_BLOCKS) -> tuple[int, ...]:
        """:func:`block_hashes` of ``text``, reusing those of the last prompt that began as it does."""
        data = text.encode("utf-8", "surrogatepass")
        step = max(1, block_chars)
        end = min(len(data), step * limit) // step * step
        if not end:
            return ()
        key = (step, data[:step])
        found = self._recent.get(key)
        if found is None:
            hashes = _chain(data, 0, end, step, 1, 1)
        else:
            earlier, known = found
            shared = _shared_blocks(data, earlier, step, min(end // step, len(known)))
            last = known[shared - 1]  # shared >= 1: the first block is the key
            hashes = known[:shared] + _chain(data, shared * step, end, step, last >> 32, last & _LOW)
        if found is not None:
            del self._recent[key]  # then set again: the most recent last
            self._bytes -= len(found[0])
        kept = data[:end]
        self._recent[key] = (kept, hashes)
        self._bytes += len(kept)
        while len(self._recent) > self.entries or self._bytes > self.max_bytes:
            self._bytes -= len(self._recent.popitem(last=False)[1][0])
        return hashes
