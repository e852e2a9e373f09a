"""A third party's plugin, installed the way a user installs one, works like an in-tree one.

Each test writes a throwaway distribution, installs it with pip into a
private ``--target`` folder, and drives the real ``anyserve`` command line in
a subprocess with that folder on ``PYTHONPATH``: nothing is registered by
hand, discovery goes through the installed ``anyserve`` entry points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

GOOD_MODULE = '''
"""A third-party plugin: one transport and one command."""

from anyserve import hookimpl
from anyserve.records import TransportSpec


def _open(options):
    raise NotImplementedError("hello-transport is a listing-only example")


@hookimpl
def anyserve_register_transports(register):
    register(TransportSpec(name="hello-transport", factory=_open, description="example"))


@hookimpl
def anyserve_register_commands(cli):
    @cli.command()
    def hello3p(name: str = "world"):
        """Greet from a third-party plugin."""
        print(f"hello3p greets {name}")
'''

#: module name -> source of plugins that are broken in the ways users break them.
BROKEN_MODULES = {
    "broken_import": 'raise RuntimeError("cannot find libfoo.so")\n',
    "misspelled_hook": (
        "from anyserve import hookimpl\n\n\n@hookimpl\ndef anyserve_register_transport(register):\n    pass\n"
    ),
    "wrong_argument": (
        "from anyserve import hookimpl\n\n\n@hookimpl\ndef anyserve_register_transports(reg):\n    pass\n"
    ),
    "raising_hook": (
        "from anyserve import hookimpl\n\n\n"
        "@hookimpl\n"
        "def anyserve_register_transports(register):\n"
        '    raise OSError("device busy")\n'
    ),
}
#: entry-point name -> module, for the broken distribution.
BROKEN_ENTRY_POINTS = {
    "broken-import": "broken_import",
    "misspelled": "misspelled_hook",
    "wrong-arg": "wrong_argument",
    "raising": "raising_hook",
}


def write_distribution(
    root: Path, name: str, version: str, modules: dict[str, str], entry_points: dict[str, str]
) -> Path:
    """A minimal setuptools distribution of top-level modules with ``anyserve`` entry points."""
    root.mkdir(parents=True)
    eps = "\n".join(f'{ep} = "{module}"' for ep, module in entry_points.items())
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{name}"
            version = "{version}"
            dependencies = ["anyserve-core"]

            [project.entry-points.anyserve]
            """
        )
        + eps
        + f"\n\n[tool.setuptools]\npy-modules = {json.dumps(sorted(modules))}\n"
    )
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source).lstrip())
    return root


def pip_install(site: Path, *projects: Path) -> None:
    """Install as a user would, into a folder of its own so the test environment stays clean."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site)]
        + [str(p) for p in projects],
        check=True,
        capture_output=True,
        timeout=120,
    )


def anyserve(site: Path, *args: str, allow: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the real CLI with ``site`` importable and only the ``allow``-listed entry points."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSERVE_")}
    env["PYTHONPATH"] = str(site)
    # Sibling in-tree plugins installed in a dev environment stay out of the way.
    env["ANYSERVE_LOAD_PLUGINS"] = allow
    env["COLUMNS"] = "250"
    return subprocess.run(
        [sys.executable, "-m", "anyserve_cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def listing(site: Path, *args: str, allow: str, cwd: Path) -> dict[str, Any]:
    result = anyserve(site, "plugins", "list", "--json", *args, allow=allow, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def good_plugin(tmp_path: Path) -> Path:
    return write_distribution(
        tmp_path / "src" / "hello3p",
        "anyserve-transport-hello3p",
        "0.4.2",
        {"hello3p": GOOD_MODULE},
        {"hello3p": "hello3p"},
    )


def test_installed_third_party_plugin_is_listed_selected_and_runs(tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip_install(site, good_plugin(tmp_path))
    allow = "anyserve-cli,hello3p"

    document = listing(site, "--transport", "hello-transport", allow=allow, cwd=tmp_path)
    plugins = {p["name"]: p for p in document["plugins"]}
    hello = plugins["hello3p"]
    assert (hello["distribution"], hello["version"], hello["status"]) == ("anyserve-transport-hello3p", "0.4.2", "ok")
    assert hello["builtin"] is False
    assert hello["hooks"] == ["register_commands", "register_transports"]
    assert hello["contributes"]["transports"] == ["hello-transport"]
    assert hello["contributes"]["commands"] == ["hello3p"]
    transport = document["selected"]["transport"]
    assert transport == {
        "setting": "transport.name",
        "value": "hello-transport",
        "source": "command line",
        "selected": "hello-transport",
        "plugin": "hello3p",
    }

    table = anyserve(site, "plugins", "list", "--transport", "hello-transport", allow=allow, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "anyserve-transport-hello3p" in table.stdout
    assert "transport: hello-transport" in table.stdout
    assert "command: hello3p" in table.stdout
    assert "hello-transport (plugin hello3p)" in table.stdout

    ran = anyserve(site, "hello3p", "--name", "Ada", allow=allow, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello3p greets Ada\n"


def test_broken_plugins_are_reported_by_name_and_the_rest_keep_working(tmp_path: Path) -> None:
    site = tmp_path / "site"
    broken = write_distribution(
        tmp_path / "src" / "broken", "anyserve-broken-examples", "0.0.1", BROKEN_MODULES, BROKEN_ENTRY_POINTS
    )
    pip_install(site, good_plugin(tmp_path), broken)
    allow = ",".join(["anyserve-cli", "hello3p", *BROKEN_ENTRY_POINTS])
    expected_reasons = {
        "broken-import": "failed to import broken_import: RuntimeError: cannot find libfoo.so",
        "misspelled": "unknown hook 'anyserve_register_transport' (did you mean 'anyserve_register_transports'?)",
        "wrong-arg": "Argument(s) {'reg'} are declared in the hookimpl but can not be found in the hookspec",
        "raising": "hook anyserve_register_transports raised OSError: device busy",
    }

    document = listing(site, "--all", "--transport", "hello-transport", allow=allow, cwd=tmp_path)
    plugins = {p["name"]: p for p in document["plugins"]}
    for name, reason in expected_reasons.items():
        assert plugins[name]["status"] == "error", name
        assert plugins[name]["distribution"] == "anyserve-broken-examples"
        assert reason in plugins[name]["reason"], plugins[name]["reason"]
    # Everything else is untouched.
    assert plugins["hello3p"]["status"] == "ok"
    for name in ("inproc", "memory", "subset", "jsonl", "least_loaded", "delegation", "cli"):
        assert plugins[name]["status"] == "ok", name
    assert document["selected"]["transport"]["selected"] == "hello-transport"
    assert document["selected"]["matcher"]["selected"] == "subset"

    table = anyserve(site, "plugins", "list", allow=allow, cwd=tmp_path)
    assert table.returncode == 0
    assert "Traceback" not in table.stdout + table.stderr
    for name, reason in expected_reasons.items():
        assert f"{name} (anyserve-broken-examples 0.0.1) error: " in table.stdout
        assert reason in table.stdout

    ran = anyserve(site, "hello3p", allow=allow, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello3p greets world\n"
    assert "Traceback" not in ran.stderr
