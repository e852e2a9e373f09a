"""Objects are private to the store's user: 0700 directories, 0600 files, a default root nobody else owns."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyserve import runtime_dir
from anyserve.config import ObjectsSettings, load_settings
from anyserve.errors import ConfigError
from anyserve.runtime_dir import default_objects_dir, default_objects_url
from anyserve_objects_fs.factory import open_store
from anyserve_objects_fs.modes import make_dirs


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask() -> Iterator[None]:
    """The most permissive umask: whatever the store creates, it is the store's own modes that hold."""
    before = os.umask(0)
    yield
    os.umask(before)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$XDG_RUNTIME_DIR`` of this test's own (0700, as systemd makes it)."""
    base = tmp_path / "run-user"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    return base


def _everything_under(root: Path) -> tuple[list[Path], list[Path]]:
    dirs, files = [], []
    for folder, subdirs, names in os.walk(root):
        dirs += [Path(folder, d) for d in subdirs]
        files += [Path(folder, n) for n in names]
    return dirs, files


def test_directories_are_0700_and_objects_0600_whatever_the_umask(tmp_path: Path, umask: None) -> None:
    root = tmp_path / "new" / "objects"  # neither exists yet: both are the store's to create
    store = open_store(str(root))
    store.create(b"secret", key="a/b/c.bin", content_type="text/plain")  # nested, with a sidecar
    store.create(b"more")
    dirs, files = _everything_under(root)
    assert len(dirs) == 2 and len(files) == 3
    assert {mode(p) for p in [root, root.parent, *dirs]} == {0o700}
    assert {mode(p) for p in files} == {0o600}


def test_configured_modes_are_applied_exactly(tmp_path: Path) -> None:
    before = os.umask(0o077)  # a strict umask does not take back what the configuration grants
    try:
        store = open_store(str(tmp_path / "shared"), {"dir_mode": "0750", "file_mode": "0o640"})
        store.create(b"x", key="group/readable")
    finally:
        os.umask(before)
    assert mode(tmp_path / "shared") == mode(tmp_path / "shared" / "group") == 0o750
    assert mode(tmp_path / "shared" / "group" / "readable") == 0o640


def test_an_existing_root_keeps_the_operators_mode(tmp_path: Path) -> None:
    tmp_path.joinpath("mine").mkdir(mode=0o755)
    os.chmod(tmp_path / "mine", 0o755)
    open_store(str(tmp_path / "mine")).create(b"x", key="d/x")
    assert mode(tmp_path / "mine") == 0o755 and mode(tmp_path / "mine" / "d") == 0o700


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dir_mode": 0o750}, "octal mode in a string"),
        ({"file_mode": "640"}, None),  # accepted: no leading zero needed
        ({"file_mode": "0x1a0"}, "octal mode in a string"),
        ({"file_mode": "4755"}, "octal mode in a string"),  # no setuid, sticky or setgid bits
        ({"dir_mode": "0500"}, "at least 0700"),
        ({"file_mode": "0400"}, "at least 0600"),
    ],
)
def test_mode_options_are_checked(tmp_path: Path, options: dict[str, object], message: str | None) -> None:
    if message is None:
        open_store(str(tmp_path), options)
        return
    with pytest.raises(ConfigError, match=message):
        open_store(str(tmp_path), options)


def test_make_dirs_behaves_as_makedirs_for_what_is_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_dirs(str(tmp_path / "file"), 0o700)
    with pytest.raises(NotADirectoryError):
        make_dirs(str(tmp_path / "file" / "below"), 0o700)
    make_dirs(str(tmp_path / "x" / "y"), 0o700)
    make_dirs(str(tmp_path / "x" / "y"), 0o700)  # already there: fine


# -- the default root ------------------------------------------------------------------------------


def test_the_default_store_is_in_the_users_runtime_directory(runtime: Path, umask: None) -> None:
    assert default_objects_dir() == str(runtime / "anyserve" / "objects")
    assert ObjectsSettings().url == default_objects_url() == f"file://{runtime}/anyserve/objects"
    assert load_settings(env={}, cwd=runtime).objects.url == default_objects_url()
    store = open_store(ObjectsSettings().url)
    store.create(b"x", key="k")
    assert mode(runtime / "anyserve") == mode(runtime / "anyserve" / "objects") == 0o700
    assert mode(runtime / "anyserve" / "objects" / "k") == 0o600


def test_without_xdg_runtime_dir_it_is_a_per_user_folder_of_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: None
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(runtime_dir, "SHARED_TMP", str(tmp_path))  # this test's /tmp, not the machine's
    assert default_objects_dir() == str(tmp_path / f"anyserve-{os.getuid()}" / "objects")
    assert runtime_dir.runtime_dir({"XDG_RUNTIME_DIR": "relative/dir"}) == str(tmp_path / f"anyserve-{os.getuid()}")
    open_store(default_objects_url()).create(b"x")
    assert mode(tmp_path / f"anyserve-{os.getuid()}") == 0o700


def test_a_default_root_others_may_enter_is_refused(runtime: Path) -> None:
    (runtime / "anyserve").mkdir(mode=0o755)
    os.chmod(runtime / "anyserve", 0o755)
    with pytest.raises(ConfigError, match=r"has mode 0755: others may enter it; it must be 0700"):
        open_store(default_objects_url())
    assert not (runtime / "anyserve" / "objects").exists()


def test_a_default_root_planted_as_a_symlink_is_refused(runtime: Path, tmp_path: Path) -> None:
    (tmp_path / "attacker").mkdir(mode=0o700)
    (runtime / "anyserve").symlink_to(tmp_path / "attacker")
    with pytest.raises(ConfigError, match="not a directory but a symbolic link"):
        open_store(default_objects_url())
    assert not (tmp_path / "attacker" / "objects").exists()


def test_a_default_root_of_another_user_is_refused(runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (runtime / "anyserve").mkdir(mode=0o700)
    # Creating a directory owned by someone else needs root; pretending to be someone else does not.
    me = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: me + 1)
    with pytest.raises(ConfigError, match=rf"belongs to uid {me}, not to this user \(uid {me + 1}\)"):
        open_store(default_objects_url())


def test_a_configured_root_is_not_held_to_the_default_roots_rules(runtime: Path, tmp_path: Path) -> None:
    shared = tmp_path / "team"
    shared.mkdir(mode=0o775)
    os.chmod(shared, 0o775)
    open_store(str(shared)).create(b"x")  # the operator chose it: the operator's mode
