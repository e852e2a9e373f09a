"""``list`` and ``stat`` report when each object was written (what ``cleanup`` and ``anyserve objects ls`` go by)."""

from __future__ import annotations

import os
import time

from anyserve_objects_fs import FileStore


def test_list_and_stat_fill_in_the_write_time(tmp_path):
    store = FileStore(tmp_path)
    before = time.time()
    ref = store.create(b"x", key="a/b")
    assert ref.created is None or ref.created >= before - 1
    (listed,) = store.list()
    assert abs(listed.created - os.stat(tmp_path / "a" / "b").st_mtime) < 1e-6
    assert store.stat(ref).created == listed.created
    past = time.time() - 3600
    os.utime(tmp_path / "a" / "b", (past, past))
    assert abs(store.stat(ref).created - past) < 1e-3
    assert store.stat(ref) == listed  # metadata only: the write time is not part of a ref's identity
