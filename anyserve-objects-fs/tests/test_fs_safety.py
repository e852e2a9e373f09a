"""What must never happen: leaving the root, or leaving a partial object behind."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyserve.errors import InvalidRequest
from anyserve_objects_fs import FileStore


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_bytes(b"not yours")
    return path


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "objects")


def everything_under(root: str) -> list[str]:
    found = []
    for directory, dirs, files in os.walk(root):
        found += [os.path.relpath(os.path.join(directory, n), root) for n in dirs + files]
    return sorted(found)


@pytest.mark.parametrize("relative", [False, True])
def test_a_symlinked_file_pointing_outside_is_refused(store: FileStore, outside: Path, relative: bool) -> None:
    target = os.path.relpath(outside / "secret", store.root) if relative else outside / "secret"
    os.symlink(target, os.path.join(store.root, "evil"))
    for operation in (store.get, store.open, store.map, store.stat, store.exists, store.delete):
        with pytest.raises(InvalidRequest, match="fs://evil"):
            operation("fs://evil")
    with pytest.raises(InvalidRequest, match="fs://evil"):
        store.create(b"overwrite", key="evil")
    assert (outside / "secret").read_bytes() == b"not yours"
    assert store.list() == []


def test_a_symlinked_directory_pointing_outside_is_refused(store: FileStore, outside: Path) -> None:
    os.symlink(outside, os.path.join(store.root, "evil"))
    with pytest.raises(InvalidRequest, match="fs://evil/planted"):
        store.create(b"x", key="evil/planted")
    with pytest.raises(InvalidRequest, match="fs://evil/secret"):
        store.get("fs://evil/secret")
    assert sorted(os.listdir(outside)) == ["secret"]
    assert store.list() == []
    assert store.cleanup(max_age_seconds=0) == 0
    assert (outside / "secret").exists()


def test_symlinks_that_stay_inside_are_followed(store: FileStore) -> None:
    store.create(b"real", key="data/real")
    os.symlink("data", os.path.join(store.root, "alias"))
    assert store.get("fs://alias/real") == b"real"


def test_a_root_reached_through_a_symlink_works(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    store = FileStore(tmp_path / "link")
    assert store.get(store.create(b"x", key="k")) == b"x"
    assert (tmp_path / "real" / "k").read_bytes() == b"x"


def failing_chunks() -> Iterator[bytes]:
    yield b"a" * 100_000
    yield b"b" * 100_000
    raise RuntimeError("upstream went away")


def test_a_failed_write_leaves_nothing_behind(store: FileStore) -> None:
    with pytest.raises(RuntimeError, match="upstream went away"):
        store.create(failing_chunks(), key="nested/dirs/obj", content_type="text/plain")
    assert everything_under(store.root) == []


def test_a_failed_rewrite_keeps_the_previous_object(store: FileStore) -> None:
    ref = store.create(b"good", key="obj", content_type="text/plain")
    with pytest.raises(RuntimeError):
        store.create(failing_chunks(), key="obj", content_type="application/octet-stream")
    assert store.get(ref) == b"good"
    assert store.stat(ref) == ref
    assert everything_under(store.root) == [".~meta.obj", "obj"]


@pytest.mark.parametrize(
    "data",
    ["text", [b"ok", "not bytes"], io.StringIO("text mode"), 42],
    ids=["str", "str-chunk", "text-file", "int"],
)
def test_data_that_is_not_bytes_is_refused_cleanly(store: FileStore, data: object) -> None:
    with pytest.raises(InvalidRequest):
        store.create(data, key="a/b")  # type: ignore[arg-type]
    assert everything_under(store.root) == []
