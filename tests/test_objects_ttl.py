"""Objects expire: a replica with a configured store collects old objects in the background."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from anyserve import Client, InferenceError, ObjRef
from anyserve.config import load_settings
from anyserve.errors import ConfigError


def _objects(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and "~" not in p.name]


def _wait_until_gone(root: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while _objects(root):
        assert time.monotonic() < deadline, f"objects still there after {timeout}s: {_objects(root)}"
        time.sleep(0.1)


def _make(client: Client, payload: bytes) -> ObjRef:
    return ObjRef.from_string(client.infer("make", {"payload": payload})["ref"][0])


def test_objects_expire_in_the_background_with_a_configured_ttl(start_replica, tmp_path):
    root = tmp_path / "objects"
    config = tmp_path / "anyserve.toml"
    config.write_text(f'[objects]\nurl = "file://{root}"\nttl_seconds = 1\ngc_interval_seconds = 0.2\n')
    replica = start_replica("objects_apps:store", "--config", str(config), "--log-level", "info")
    with Client(replica.endpoint, timeout=30) as client:
        ref = _make(client, b"short-lived")
        assert client.infer("read", {"ref": ref})["length"] == [len(b"short-lived")]
        assert len(_objects(root)) == 1
        _wait_until_gone(root)
        with pytest.raises(InferenceError) as info:
            client.infer("read", {"ref": ref})
    assert info.value.code == "NOT_FOUND"
    assert str(ref) in info.value.message
    replica.process.wait_for("object collection removed 1 object(s) older than 1s", timeout=10)


def test_the_ttl_comes_from_the_environment_too(start_replica, tmp_path):
    root = tmp_path / "objects"
    replica = start_replica(
        "objects_apps:store",
        "--object-store",
        str(root),
        ANYSERVE_OBJECT_TTL="1",
        ANYSERVE_OBJECT_GC_INTERVAL="0.2",
    )
    with Client(replica.endpoint, timeout=30) as client:
        ref = _make(client, b"env")
        _wait_until_gone(root)
        with pytest.raises(InferenceError) as info:
            client.infer("read", {"ref": str(ref)})
    assert info.value.code == "NOT_FOUND" and str(ref) in info.value.message


def test_a_ttl_of_zero_keeps_objects(start_replica, tmp_path):
    root = tmp_path / "objects"
    replica = start_replica(
        "objects_apps:store",
        "--object-store",
        f"file://{root}",
        "--log-level",
        "debug",
        ANYSERVE_OBJECT_TTL="0",
        ANYSERVE_OBJECT_GC_INTERVAL="0.1",
    )
    with Client(replica.endpoint, timeout=30) as client:
        ref = _make(client, b"kept")
        time.sleep(1.5)
        assert client.infer("read", {"ref": ref})["length"] == [4]
    assert "object collection off" in replica.process.output()


def test_ttl_settings_are_validated_and_mapped_from_the_environment(tmp_path):
    settings = load_settings(env={}, cwd=tmp_path)
    assert settings.objects.ttl_seconds == 3600 and settings.objects.gc_interval_seconds == 60
    settings = load_settings(env={"ANYSERVE_OBJECT_TTL": "90", "ANYSERVE_OBJECT_GC_INTERVAL": "5"}, cwd=tmp_path)
    assert settings.objects.ttl_seconds == 90 and settings.objects.gc_interval_seconds == 5
    assert settings.source_of("objects.ttl_seconds") == "$ANYSERVE_OBJECT_TTL"
    for bad in ({"ANYSERVE_OBJECT_TTL": "-1"}, {"ANYSERVE_OBJECT_GC_INTERVAL": "0"}, {"ANYSERVE_OBJECT_TTL": "inf"}):
        with pytest.raises(ConfigError) as info:
            load_settings(env=bad, cwd=tmp_path)
        assert "objects." in str(info.value)
