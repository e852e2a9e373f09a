"""The backend as a replica reaches it: entry point -> hook -> catalog -> factory(url, options)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import anyserve_objects_fs
import anyserve_objects_fs.plugin
from anyserve.catalog import Catalog
from anyserve.errors import ConfigError
from anyserve.plugins import create_plugin_manager
from anyserve_objects_fs.factory import open_store


@pytest.fixture
def catalog() -> Catalog:
    pm = create_plugin_manager(entrypoints=False, plugins=(anyserve_objects_fs.plugin,), env={})
    assert not pm.failures
    return Catalog(pm)


def test_plain_paths_and_file_urls_open_the_same_store(catalog: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "shared objects"  # a space, so the URL form needs percent-decoding
    urls = [str(root), root.as_uri(), f"file://localhost{root}"]
    stores = []
    for url in urls:
        spec = catalog.object_backend(url)
        assert spec.name == "fs" and spec.schemes == ("file",)
        stores.append(spec.factory(url, {}))
    ref = stores[0].create(b"hello", key="from/first")
    assert [s.get(ref) for s in stores] == [b"hello"] * 3
    assert (root / "from" / "first").read_bytes() == b"hello"


def test_relative_plain_paths_are_taken_from_the_current_directory(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = catalog.object_backend("objects").factory("objects", {})
    assert store.root == str(tmp_path.resolve() / "objects")


def test_options_reach_the_store(catalog: Catalog, tmp_path: Path) -> None:
    store = catalog.object_backend(str(tmp_path)).factory(str(tmp_path), {"fsync": True, "temp_grace_seconds": 5})
    assert store.fsync is True and store.temp_grace_seconds == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fsnyc": True}, "unknown .* 'fsnyc'.*fsync"),
        ({"fsync": "yes"}, "fsync must be bool"),
        ({"temp_grace_seconds": True}, "temp_grace_seconds must be int or float"),
        ({"temp_grace_seconds": -1}, ">= 0"),
    ],
)
def test_bad_options_are_configuration_errors(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(str(tmp_path), options)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("file://fileserver/objects", "names host 'fileserver'"),
        ("file:relative/dir", "absolute path"),
        ("file:///tmp/x?mode=1", "query"),
        ("s3://bucket/objects", "file:// URLs and plain paths"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url, {})


def test_the_distribution_declares_its_entry_point() -> None:
    (ep,) = importlib.metadata.entry_points(group="anyserve", name="objects-fs")
    assert ep.value == "anyserve_objects_fs.plugin"
    assert ep.load() is anyserve_objects_fs.plugin


def test_importing_the_plugin_imports_no_store_code() -> None:
    code = (
        "import sys, anyserve_objects_fs.plugin; "
        "loaded = [m for m in ('anyserve_objects_fs.store', 'anyserve_objects_fs.factory') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_package_attributes_load_lazily() -> None:
    assert anyserve_objects_fs.FileStore.backend == "fs"
    assert anyserve_objects_fs.open_store is open_store
    with pytest.raises(AttributeError):
        anyserve_objects_fs.nothing  # noqa: B018
