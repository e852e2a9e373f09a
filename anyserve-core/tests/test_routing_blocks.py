"""A prompt's chained block hashes, and the memo that hashes only what a prompt adds to recent ones."""

from __future__ import annotations

import random

import pytest

from anyserve.routing import blocks
from anyserve.routing.blocks import MAX_BLOCKS, PrefixMemo, block_hashes

SYSTEMS = [f"system {n}: " + "Answer from the manual, é and ✓ included. " * 12 for n in range(3)]


def test_blocks_chain_so_a_shared_hash_means_a_shared_beginning():
    a = block_hashes("x" * 32 + "a" * 16, 16)
    b = block_hashes("x" * 32 + "b" * 16, 16)
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]
    assert block_hashes("y" * 16 + "x" * 16, 16)[1] != a[1]  # the same block after a different one
    assert block_hashes("x" * 47, 16) == a[:2]  # a partial last block is left out
    assert block_hashes("", 16) == () == block_hashes("short", 16)
    assert len(block_hashes("z" * 16 * (MAX_BLOCKS + 5), 16)) == MAX_BLOCKS


def test_the_memo_gives_what_hashing_from_scratch_gives():
    rng = random.Random(5)
    memo = PrefixMemo(entries=4)
    earlier: list[str] = []
    for _ in range(600):
        kind = rng.randrange(5)
        if kind == 0 or not earlier:
            text = rng.choice(SYSTEMS) + "".join(rng.choice("abé✓ ") for _ in range(rng.randrange(200)))
        elif kind == 1:
            text = rng.choice(earlier)  # the same prompt again
        elif kind == 2:
            before = rng.choice(earlier)
            text = before[: rng.randrange(len(before) + 1)]  # a beginning of an earlier one
        elif kind == 3:
            text = rng.choice(earlier) + "user\x1fand then?\x1e" * rng.randrange(1, 4)  # the next turn
        else:
            text = "".join(rng.choice("xyzé") for _ in range(rng.randrange(300)))  # nothing in common
        step = rng.choice((8, 16, 128))
        limit = rng.choice((MAX_BLOCKS, 5))
        assert memo.hashes(text, step, limit) == block_hashes(text, step, limit), (text, step, limit)
        earlier.append(text)
        assert len(memo._recent) <= 4


def test_a_prompt_beginning_as_a_recent_one_hashes_only_its_new_blocks(monkeypatch: pytest.MonkeyPatch):
    hashed: list[tuple[int, int]] = []
    chain = blocks._chain

    def counting(data: bytes, start: int, end: int, *rest: int) -> tuple[int, ...]:
        hashed.append((start, end))
        return chain(data, start, end, *rest)

    monkeypatch.setattr(blocks, "_chain", counting)
    memo = PrefixMemo()
    system = "s" * 1600  # 100 blocks of 16
    memo.hashes(system + "u" * 40 + "first user", 16)
    assert hashed == [(0, 1648)]
    hashed.clear()
    memo.hashes(system + "w" * 40 + "another user", 16)  # the system prompt is known: its 100 blocks are not rehashed
    assert hashed == [(1600, 1648)]
    hashed.clear()
    memo.hashes(system + "w" * 40 + "another user" + "v" * 64, 16)  # the next turn of that conversation
    assert hashed == [(1648, 1712)]


def test_the_memo_keeps_at_most_its_entries_the_least_recently_met_dropped():
    memo = PrefixMemo(entries=2)
    for first in "abc":
        memo.hashes(first * 64, 16)
    assert [key[1] for key in memo._recent] == [b"b" * 16, b"c" * 16]
    memo.hashes("b" * 80, 16)
    memo.hashes("d" * 64, 16)
    assert [key[1] for key in memo._recent] == [b"b" * 16, b"d" * 16]


def test_the_memo_holds_at_most_its_bytes_of_prompt_text():
    memo = PrefixMemo(entries=10, max_bytes=200)
    for first in "abcd":
        memo.hashes(first * 64, 16)
    assert [key[1][:1] for key in memo._recent] == [b"b", b"c", b"d"] and memo._bytes == 192
    assert memo.hashes("e" * 400, 16) == block_hashes("e" * 400, 16)
    assert not memo._recent and memo._bytes == 0  # a prompt over the bound by itself is not kept
