"""Shared fixtures: short socket directories and a bounded way to run coroutines."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

TEST_TIMEOUT = 20.0


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # Short on purpose: AF_UNIX paths are limited to ~107 bytes, pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="as-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def arun() -> Callable[[Awaitable[Any]], Any]:
    """Run a coroutine to completion, failing instead of hanging past TEST_TIMEOUT."""

    def run(coro: Awaitable[Any], timeout: float = TEST_TIMEOUT) -> Any:
        async def bounded() -> Any:
            return await asyncio.wait_for(coro, timeout)

        return asyncio.run(bounded())

    return run
