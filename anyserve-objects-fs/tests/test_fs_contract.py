"""FileStore passes core's object-store contract, plus what is particular to files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from anyserve.errors import InvalidRequest, ObjectNotFound
from anyserve.objects import ObjRef
from anyserve.testing import ObjectStoreContract
from anyserve_objects_fs import FileStore


class TestFileStore(ObjectStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> FileStore:
        return FileStore(tmp_path / "objects")


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "objects")


def files_under(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def test_objects_are_plain_files_named_by_their_key(store: FileStore) -> None:
    ref = store.create(b"payload", key="stage1/output.bin")
    assert str(ref) == "fs://stage1/output.bin"
    assert Path(store.root, "stage1", "output.bin").read_bytes() == b"payload"


def test_content_type_round_trips_through_a_hidden_json_sidecar(store: FileStore) -> None:
    ref = store.create(b"{}", key="doc.json", content_type="application/json")
    assert ref.content_type == "application/json"
    assert store.stat("fs://doc.json") == ref
    assert [r for r in store.list() if r.key == "doc.json"] == [ref]
    assert json.loads(Path(store.root, ".~meta.doc.json").read_text()) == {"content_type": "application/json"}


def test_rewriting_without_content_type_drops_the_old_one(store: FileStore) -> None:
    store.create(b"a", key="k", content_type="text/plain")
    ref = store.create(b"bb", key="k")
    assert store.stat(ref) == ObjRef("fs", "k", size=2)
    assert files_under(store.root) == ["k"]


def test_bookkeeping_files_never_show_up_as_objects(store: FileStore) -> None:
    store.create(b"x", key="a/b", content_type="text/plain")
    Path(store.root, "a", ".~tmp.deadbeef").write_bytes(b"half")  # a write in progress elsewhere
    assert [r.key for r in store.list()] == ["a/b"]
    with pytest.raises(InvalidRequest):  # and no key can name one of them
        store.get("fs://a/.~meta.b")


def test_files_no_key_could_name_are_not_listed(store: FileStore) -> None:
    Path(store.root, "has space").write_bytes(b"x")
    store.create(b"y", key="fine")
    assert [r.key for r in store.list()] == ["fine"]


def test_map_gives_a_read_only_view(store: FileStore) -> None:
    blob = bytes(range(256)) * 64
    ref = store.create(blob)
    view = store.map(ref)
    assert view.readonly and view.nbytes == len(blob) and view[:256] == bytes(range(256))
    store.create(b"rewritten", key=ref.key)  # the mapping keeps the object it mapped
    assert bytes(view) == blob
    view.release()
    assert store.map(store.create(b"")).nbytes == 0


def test_open_keeps_reading_the_object_it_opened(store: FileStore) -> None:
    ref = store.create(b"first", key="k")
    with store.open(ref) as fh:
        store.create(b"second!", key="k")
        store.delete("fs://k")
        assert fh.read() == b"first"


def test_missing_objects_through_every_reader(store: FileStore) -> None:
    for read in (store.get, store.open, store.map, store.stat):
        with pytest.raises(ObjectNotFound, match="fs://nope/x"):
            read("fs://nope/x")
    assert not store.exists("fs://nope/x")


def test_a_key_cannot_be_both_an_object_and_a_directory(store: FileStore) -> None:
    store.create(b"x", key="a")
    with pytest.raises(InvalidRequest, match="fs://a/b"):
        store.create(b"y", key="a/b")
    store.create(b"z", key="d/e")
    with pytest.raises(InvalidRequest, match="fs://d"):
        store.create(b"w", key="d", content_type="text/plain")
    with pytest.raises(ObjectNotFound):
        store.get("fs://d")
    assert store.delete("fs://d") is False
    assert sorted(r.key for r in store.list()) == ["a", "d/e"]
    assert files_under(store.root) == ["a", "d/e"]


def test_delete_removes_the_sidecar_and_emptied_directories(store: FileStore) -> None:
    ref = store.create(b"x", key="deep/er/obj", content_type="text/plain")
    assert store.delete(ref)
    assert os.listdir(store.root) == []


def test_cleanup_spares_writes_in_progress_and_removes_abandoned_ones(store: FileStore) -> None:
    store.create(b"keep", key="d/keep")
    young = Path(store.root, "d", ".~tmp.young")
    old = Path(store.root, "d", ".~tmp.old")
    orphan = Path(store.root, "d", ".~meta.gone")
    for path in (young, old, orphan):
        path.write_bytes(b"{}")
    an_hour_ago = time.time() - 3600
    for path in (old, orphan):
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert store.cleanup(max_age_seconds=600) == 0
    assert files_under(store.root) == ["d/.~tmp.young", "d/keep"]


def test_cleanup_goes_by_last_write(store: FileStore) -> None:
    old = store.create(b"old", key="x/old", content_type="text/plain")
    new = store.create(b"new", key="y/new")
    an_hour_ago = time.time() - 3600
    os.utime(os.path.join(store.root, "x", "old"), (an_hour_ago, an_hour_ago))
    assert store.cleanup(max_age_seconds=60) == 1
    assert not store.exists(old) and store.exists(new)
    assert files_under(store.root) == ["y/new"]


def test_fsync_option_still_writes(tmp_path: Path) -> None:
    store = FileStore(tmp_path, fsync=True)
    assert store.get(store.create([b"a", b"b"], content_type="text/plain")) == b"ab"


def test_root_must_be_usable(tmp_path: Path) -> None:
    from anyserve.errors import ConfigError

    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="object store directory"):
        FileStore(tmp_path / "file")


def test_cleanup_keeps_an_object_rewritten_after_it_looked(store: FileStore) -> None:
    from anyserve_objects_fs.store import _remove_if_older

    path = os.path.join(store.root, "k")
    store.create(b"fresh", key="k")  # cleanup saw an old mtime, then this rewrite landed
    assert _remove_if_older(path, cutoff=time.time() - 3600) is False
    assert store.get("fs://k") == b"fresh"
    assert files_under(store.root) == ["k"]
