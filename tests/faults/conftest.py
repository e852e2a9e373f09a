"""The fault tests' shared cluster: one per package, per test worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostile_cluster import Ports, start_cluster


@pytest.fixture(scope="package")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    yield from start_cluster(tmp_path_factory)
