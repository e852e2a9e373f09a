"""API keys: the key file's checks, and which queries a scoped key may call (end to end: tests/test_auth.py)."""

from __future__ import annotations

import hashlib

import pytest

from anyserve.config import Settings
from anyserve.credentials import Credentials
from anyserve.errors import ConfigError, PermissionDenied, Unauthenticated
from anyserve_router import api_keys
from anyserve_router.api_keys import MEMBER, ApiKeys, read_key_file

SECRET = "sk-0123456789abcdef"


def test_no_key_configured_means_an_open_data_plane():
    assert ApiKeys.from_settings(Settings(), Credentials("c", "a")) is None


def test_keys_from_a_file_by_value_or_digest_each_scoped(tmp_path):
    path = tmp_path / "keys.toml"
    digest = hashlib.sha256(b"sk-embed-only-0123456").hexdigest()
    path.write_text(
        f'[[keys]]\nname = "all"\nkey = "{SECRET}"\n\n'
        f'[[keys]]\nname = "embed"\nsha256 = "{digest}"\ncapabilities = [{{Type = "embed"}}]\n'
    )
    keys = ApiKeys.from_settings(Settings.model_validate({"auth": {"api_keys_file": str(path)}}), Credentials("c", "a"))
    assert keys is not None
    assert keys.check(SECRET, {"type": "chat"}).name == "all"
    assert keys.check("sk-embed-only-0123456", {"type": "embed", "model": "x"}).name == "embed"  # the key normalised
    with pytest.raises(PermissionDenied, match="'embed' may call only capabilities matching type=embed"):
        keys.check("sk-embed-only-0123456", {"type": "chat", "model": "x"})
    with pytest.raises(Unauthenticated, match="needs an API key"):
        keys.check(None, {"type": "chat"})
    with pytest.raises(Unauthenticated, match="not valid"):
        keys.check("sk-wrong", {"type": "chat"})
    # cluster members (a replica delegating back) pass with their token
    assert keys.authenticate("c") is MEMBER and keys.authenticate("a") is MEMBER


def test_keys_from_the_environment_allow_everything():
    settings = Settings.model_validate({"auth": {"api_keys": f" {SECRET} , sk-other-key-000000 "}})
    keys = ApiKeys.from_settings(settings, Credentials(None, None))
    assert keys is not None and keys.check("sk-other-key-000000", {"type": "anything"})
    with pytest.raises(Unauthenticated):  # with the control plane open there is no member token to pass
        keys.check("c", {"type": "chat"})


def test_valid_keys_are_remembered_as_presented_and_invalid_ones_never(monkeypatch):
    """A client's key is digested once; strangers' keys are digested every time and never fill the memory."""
    monkeypatch.setattr("anyserve_router.api_keys.MAX_REMEMBERED", 2)
    keys = ApiKeys.from_settings(
        Settings.model_validate({"auth": {"api_keys": f"{SECRET},sk-second-key-00000,sk-third-key-000000"}}),
        Credentials(None, None),
    )
    assert keys is not None
    digested: list[str] = []
    real = api_keys.digest
    monkeypatch.setattr(api_keys, "digest", lambda key: digested.append(key) or real(key))
    for _ in range(3):
        keys.check(SECRET, {"type": "chat"})
        with pytest.raises(Unauthenticated):
            keys.check("sk-wrong-key-000000", {"type": "chat"})
    assert digested == [SECRET] + ["sk-wrong-key-000000"] * 3
    keys.check("sk-second-key-00000", {"type": "chat"})
    keys.check("sk-third-key-000000", {"type": "chat"})  # past the bound: still valid, digested each time
    keys.check("sk-third-key-000000", {"type": "chat"})
    assert digested[-3:] == ["sk-second-key-00000", "sk-third-key-000000", "sk-third-key-000000"]


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("keys = [", "not valid TOML"),
        ("[other]\nx = 1", "expected \\[\\[keys\\]\\]"),
        ('[[keys]]\nname = "x"', "exactly one of key or sha256"),
        (f'[[keys]]\nkey = "{SECRET}"\nsha256 = "{"0" * 64}"', "exactly one of key or sha256"),
        ('[[keys]]\nkey = "short"', "at least 16 characters"),
        ('[[keys]]\nsha256 = "abc"', "64 hex digits"),
        (f'[[keys]]\nkey = "{SECRET}"\ncapabilities = [{{}}]', "non-empty tables"),
        (f'[[keys]]\nkey = "{SECRET}"\nscope = "all"', "unknown field"),
    ],
)
def test_a_bad_key_file_is_a_config_error_naming_the_entry(tmp_path, text, fault):
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fault):
        read_key_file(path)
