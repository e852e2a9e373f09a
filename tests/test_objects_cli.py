"""``anyserve objects ls | get | rm | gc`` against a real ``fs`` store in a temp directory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import anyserve_cli.commands
import anyserve_objects_fs.plugin
from anyserve.plugins import PluginOrigin, create_plugin_manager
from anyserve_cli.main import build_cli
from anyserve_objects_fs import FileStore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "objects"


@pytest.fixture
def store(root: Path) -> FileStore:
    return FileStore(root)


@pytest.fixture
def anyserve(tmp_path, monkeypatch):
    """``anyserve(*args)`` in-process, with core's built-ins, the CLI and the fs backend only."""
    for var in [v for v in os.environ if v.startswith("ANYSERVE_")]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    pm = create_plugin_manager(entrypoints=False, env={})
    pm.register_checked(anyserve_cli.commands, PluginOrigin("cli", "anyserve-cli", "0", builtin=False))
    pm.register_checked(
        anyserve_objects_fs.plugin, PluginOrigin("objects-fs", "anyserve-objects-fs", "0", builtin=False)
    )
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(build_cli(pm), list(args), env={"COLUMNS": "250", **(env or {})})

    return run


def test_ls_shows_key_size_age_and_content_type(anyserve, store, root):
    store.create(b"hello", key="stage1/out.txt", content_type="text/plain")
    old = store.create(b"x" * 1000)
    past = time.time() - 7200
    os.utime(root / old.key, (past, past))
    result = anyserve("objects", "ls", "--object-store", f"file://{root}")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["KEY", "SIZE", "AGE", "CONTENT-TYPE"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
    assert rows["stage1/out.txt"][0] == "5" and rows["stage1/out.txt"][2] == "text/plain"
    assert rows[old.key] == ["1000", "2h", "-"]
    assert lines[-1].startswith("2 object(s), 1005 bytes")
    document = json.loads(anyserve("objects", "ls", "--json", "--object-store", str(root)).output)
    by_key = {o["key"]: o for o in document["objects"]}
    assert by_key["stage1/out.txt"]["ref"] == "fs://stage1/out.txt"
    assert by_key[old.key]["age_seconds"] >= 7199 and by_key[old.key]["size"] == 1000
    assert document["backend"] == "fs"


def test_the_store_comes_from_config_and_environment(anyserve, store, root, tmp_path):
    store.create(b"a", key="from-config")
    config = tmp_path / "anyserve.toml"
    config.write_text(f'[objects]\nurl = "file://{root}"\n')
    assert "from-config" in anyserve("objects", "ls").output  # ./anyserve.toml
    config.rename(tmp_path / "other.toml")
    assert "from-config" in anyserve("objects", "ls", "--config", str(tmp_path / "other.toml")).output
    assert "from-config" in anyserve("objects", "ls", env={"ANYSERVE_OBJECT_STORE": str(root)}).output


def test_get_writes_to_stdout_or_a_file(anyserve, store, root, tmp_path):
    blob = os.urandom(3 * 1024 * 1024 + 5)
    ref = store.create(blob)
    result = anyserve("objects", "get", str(ref), "--object-store", str(root))
    assert result.exit_code == 0 and result.stdout_bytes == blob
    target = tmp_path / "copy.bin"
    result = anyserve("objects", "get", ref.key, "-o", str(target), "--object-store", str(root))
    assert result.exit_code == 0 and target.read_bytes() == blob
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_rm_removes_and_reports_missing(anyserve, store, root):
    a, b = store.create(b"a"), store.create(b"b")
    result = anyserve("objects", "rm", str(a), b.key, "fs://never", "--object-store", str(root))
    assert result.exit_code == 1
    assert f"removed {a}" in result.stdout and f"removed {b}" in result.stdout
    assert "error: object fs://never not found" in result.stderr
    assert store.list() == []


def test_gc_uses_the_ttl_or_max_age(anyserve, store, root, tmp_path):
    old, fresh = store.create(b"old"), store.create(b"fresh")
    past = time.time() - 600
    os.utime(root / old.key, (past, past))
    config = tmp_path / "ttl.toml"
    config.write_text(f'[objects]\nurl = "{root}"\nttl_seconds = 300\n')
    result = anyserve("objects", "gc", "--config", str(config))
    assert result.exit_code == 0 and result.stdout.startswith("removed 1 object(s) older than 300s")
    assert [r.key for r in store.list()] == [fresh.key]
    assert (
        "removed 1 object(s) older than 0s"
        in anyserve("objects", "gc", "--max-age", "0", "--object-store", str(root)).stdout
    )
    off = anyserve("objects", "gc", "--object-store", str(root), env={"ANYSERVE_OBJECT_TTL": "0"})
    assert off.exit_code == 2 and off.stderr.startswith("error: objects.ttl_seconds is 0")


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (("ls", "--object-store", "s3://bucket/x"), 2, "no object backend handles s3:// "),
        (("get", "fs://missing"), 1, "fs://missing not found"),
        (("get", "../../etc/passwd"), 2, "escapes the object store"),
        (("get", "mem://k"), 2, "belongs to backend 'mem'"),
        (("rm", "a//b"), 2, "escapes the object store"),
    ],
)
def test_errors_are_one_line_and_a_non_zero_exit(anyserve, root, args, status, says):
    cmd, *rest = args
    if "--object-store" not in rest:
        rest += ["--object-store", str(root)]
    result = anyserve("objects", cmd, *rest)
    assert result.exit_code == status, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert says in result.stderr
    if "s3" in says:
        assert "file:// (fs)" in result.stderr and "mem:// (mem)" in result.stderr  # the installed schemes
    assert "Traceback" not in result.output


def test_get_streams_a_large_object_in_bounded_memory(store, root, tmp_path):
    """The real console entry point, 64 MiB object: peak memory stays far below the object's size."""
    chunk = os.urandom(1 << 20)
    ref = store.create(chunk for _ in range(64))
    small = store.create(b"tiny")

    def peak_rss_kib(key: str, target: Path) -> int:
        code = (
            "import resource, sys\n"
            "from anyserve_cli.main import main\n"
            f"sys.argv = ['anyserve', 'objects', 'get', {key!r}, '-o', {str(target)!r}, "
            f"'--object-store', {str(root)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
        return int(done.stdout.split()[-1])

    baseline = peak_rss_kib(small.key, tmp_path / "small")
    peak = peak_rss_kib(ref.key, tmp_path / "big")
    digest = hashlib.sha256()
    with open(tmp_path / "big", "rb") as fh:
        while data := fh.read(1 << 20):
            digest.update(data)
    assert digest.hexdigest() == hashlib.sha256(chunk * 64).hexdigest()
    assert peak - baseline < 16 * 1024, f"peak {peak} KiB vs {baseline} KiB for a tiny object"
