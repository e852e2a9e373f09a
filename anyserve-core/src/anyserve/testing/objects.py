"""The object-store contract: what a handler may rely on from any backend."""

from __future__ import annotations

import io
import time

import pytest

from anyserve.errors import InvalidRequest, ObjectNotFound
from anyserve.objects import ObjectStore, ObjRef

ESCAPING_KEYS = ["../x", "a/../../b", "/etc/passwd", "a//b", ".", "..", "a/./b", "x\\..\\y", "a\x00b", ""]


class ObjectStoreContract:
    """Subclass in a backend's tests and provide the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> ObjectStore:
        raise NotImplementedError("provide a `store` fixture returning the object store under test")

    def test_is_an_object_store(self, store: ObjectStore) -> None:
        assert isinstance(store, ObjectStore)

    def test_create_then_get(self, store: ObjectStore) -> None:
        ref = store.create(b"hello")
        assert isinstance(ref, ObjRef) and ref.backend == store.backend
        assert ref.size == 5
        assert store.get(ref) == b"hello"
        assert store.get(str(ref)) == b"hello"
        assert store.get(ObjRef.from_string(ref.to_string())) == b"hello"

    def test_refs_survive_their_wire_forms(self, store: ObjectStore) -> None:
        ref = store.create(b"x", content_type="text/plain")
        assert ObjRef.from_dict(ref.to_dict()) == ref
        assert ObjRef.from_string(str(ref)).key == ref.key

    def test_keys_are_unique_unless_given(self, store: ObjectStore) -> None:
        assert store.create(b"a").key != store.create(b"a").key
        ref = store.create(b"named", key="stage1/output.bin")
        assert ref.key == "stage1/output.bin"
        assert store.get(ref) == b"named"

    def test_create_from_chunks_and_files(self, store: ObjectStore) -> None:
        chunks = (bytes([n]) * 1000 for n in range(10))
        ref = store.create(chunks)
        assert store.get(ref) == b"".join(bytes([n]) * 1000 for n in range(10))
        ref = store.create(io.BytesIO(b"from a file"))
        assert store.get(ref) == b"from a file"
        assert store.create(b"").size == 0

    def test_text_is_refused_not_guessed(self, store: ObjectStore) -> None:
        with pytest.raises(InvalidRequest):
            store.create("text")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest):
            store.create(iter(["a", "b"]))  # type: ignore[arg-type]

    def test_a_failed_write_leaves_nothing_and_keeps_the_previous_object(self, store: ObjectStore) -> None:
        def failing():
            yield b"first chunk"
            raise OSError("source went away")

        with pytest.raises(OSError):
            store.create(failing(), key="half-written")
        assert not store.exists(ObjRef(store.backend, "half-written"))
        store.create(b"complete", key="kept")
        with pytest.raises(OSError):
            store.create(failing(), key="kept")
        assert store.get(ObjRef(store.backend, "kept")) == b"complete"
        assert "half-written" not in {r.key for r in store.list()}

    def test_open_reads_large_objects(self, store: ObjectStore) -> None:
        blob = bytes(range(256)) * 4096  # 1 MiB
        ref = store.create(blob)
        with store.open(ref) as fh:
            assert fh.read(256) == bytes(range(256))
            assert fh.read() == blob[256:]

    def test_exists_and_delete(self, store: ObjectStore) -> None:
        ref = store.create(b"gone soon")
        assert store.exists(ref)
        assert store.delete(ref) is True
        assert not store.exists(ref)
        assert store.delete(ref) is False

    def test_missing_object_names_the_reference(self, store: ObjectStore) -> None:
        ref = store.create(b"x")
        store.delete(ref)
        with pytest.raises(ObjectNotFound) as info:
            store.get(ref)
        assert str(ref) in str(info.value)
        assert info.value.code == "NOT_FOUND"

    def test_list_shows_objects_with_sizes_and_types(self, store: ObjectStore) -> None:
        a = store.create(b"aaa")
        b = store.create(b"bbbbb", content_type="application/json")
        listed = {r.key: r for r in store.list()}
        assert listed[a.key].size == 3 and listed[b.key].size == 5
        assert listed[b.key].content_type == "application/json"

    def test_cleanup_removes_only_old_objects(self, store: ObjectStore) -> None:
        old = store.create(b"old")
        time.sleep(0.05)
        assert store.cleanup(max_age_seconds=3600) == 0
        assert store.exists(old)
        assert store.cleanup(max_age_seconds=0) >= 1
        assert not store.exists(old)

    @pytest.mark.parametrize("key", ESCAPING_KEYS)
    def test_keys_that_escape_are_refused(self, store: ObjectStore, key: str) -> None:
        with pytest.raises(InvalidRequest):
            store.create(b"x", key=key)
        with pytest.raises(InvalidRequest):
            store.get(ObjRef(store.backend, key))

    def test_references_to_another_backend_are_refused(self, store: ObjectStore) -> None:
        with pytest.raises(InvalidRequest):
            store.get(ObjRef("no-such-backend", "k"))
