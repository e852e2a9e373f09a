from pathlib import Path

import pytest

from anyserve.config import load_settings
from anyserve.errors import ConfigError


def test_defaults_without_any_file(tmp_path: Path):
    settings = load_settings(env={}, cwd=tmp_path)
    assert settings.transport.name == "inproc"
    assert settings.encoding.name == "sse"
    assert settings.matcher.name == "subset"
    assert settings.router.url is None
    assert settings.source_of("transport.name") == "default"


def test_file_then_env_then_flags(tmp_path: Path):
    (tmp_path / "anyserve.toml").write_text(
        '[transport]\nname = "unix"\noptions = { max_frame_bytes = 1024 }\n'
        '[objects]\nurl = "file:///srv/objects"\n[router]\nurl = "http://127.0.0.1:9000"\n'
    )
    settings = load_settings(env={}, cwd=tmp_path)
    assert settings.transport.name == "unix"
    assert settings.transport.options == {"max_frame_bytes": 1024}
    assert settings.source_of("transport.name").endswith("anyserve.toml")

    env = {"ANYSERVE_TRANSPORT": "inproc", "ANYSERVE_ROUTER_URL": "http://127.0.0.1:8080"}
    settings = load_settings(env=env, cwd=tmp_path)
    assert settings.transport.name == "inproc"
    assert settings.source_of("transport.name") == "$ANYSERVE_TRANSPORT"
    assert settings.objects.url == "file:///srv/objects"
    assert settings.router.url == "http://127.0.0.1:8080"

    settings = load_settings(env=env, cwd=tmp_path, overrides={"transport.name": "unix", "objects.url": None})
    assert settings.transport.name == "unix"
    assert settings.source_of("transport.name") == "command line"
    assert settings.objects.url == "file:///srv/objects"  # a flag not given changes nothing


def test_pyproject_tool_table(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.anyserve.encoding]\nname = "jsonl"\n')
    assert load_settings(env={}, cwd=tmp_path).encoding.name == "jsonl"


def test_explicit_file_and_env_file(tmp_path: Path):
    cfg = tmp_path / "other.toml"
    cfg.write_text('[matcher]\nname = "glob"\n')
    assert load_settings(cfg, env={}).matcher.name == "glob"
    assert load_settings(env={"ANYSERVE_CONFIG": str(cfg)}, cwd=tmp_path).matcher.name == "glob"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[transport]\nname = 3\n", r"\[transport.name\]: Input should be a valid string \(got 3\)"),
        ('[transprot]\nname = "unix"\n', r"\[transprot\]: unknown setting"),
        ('[transport]\nnmae = "unix"\n', r"\[transport.nmae\]: unknown setting"),
        ('[transport\nname = "unix"\n', r"not valid TOML"),
    ],
)
def test_invalid_files_name_file_key_and_expectation(tmp_path: Path, text: str, expected: str):
    cfg = tmp_path / "anyserve.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_settings(cfg, env={})
    assert str(cfg) in str(info.value)


def test_missing_explicit_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})
