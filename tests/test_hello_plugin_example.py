"""examples/hello-plugin installs like any third-party plugin and does what its README says."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from anyserve import AnyServe, ModelInferRequest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello-plugin"


def _load_module() -> ModuleType:
    """The example's module straight from the source tree, for in-process calls."""
    spec = importlib.util.spec_from_file_location("anyserve_capability_hello", EXAMPLE / "anyserve_capability_hello.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed as a user would, into a folder of its own."""
    root = tmp_path_factory.mktemp("hello-plugin")
    # Build from a copy: building in place would leave build/ and *.egg-info in examples/.
    project = shutil.copytree(EXAMPLE, root / "project")
    target = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--target", str(target), str(project)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return target


def anyserve(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSERVE_")}
    env["PYTHONPATH"] = str(site)
    env["ANYSERVE_LOAD_PLUGINS"] = "anyserve-cli,anyserve-capability-hello"
    env["COLUMNS"] = "250"
    return subprocess.run(
        [sys.executable, "-m", "anyserve_cli", *args],
        cwd=site.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_plugins_list_shows_the_capability_and_command(site: Path) -> None:
    result = anyserve(site, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    hello = plugins["hello"]
    assert (hello["distribution"], hello["version"], hello["status"]) == ("anyserve-capability-hello", "0.1.0", "ok")
    assert hello["hooks"] == ["register_capabilities", "register_commands"]
    assert hello["contributes"]["capabilities"] == [{"type": "hello"}]
    assert hello["contributes"]["commands"] == ["hello"]

    table = anyserve(site, "plugins", "list")
    assert table.returncode == 0, table.stderr
    assert "anyserve-capability-hello" in table.stdout
    assert "capability: type=hello" in table.stdout
    assert "command: hello" in table.stdout


def test_the_command_works(site: Path) -> None:
    result = anyserve(site, "hello", "--name", "Ada")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, Ada!\n"
    assert anyserve(site, "hello").stdout == "Hello, world!\n"


def test_the_handler_answers_with_a_bytes_text_output() -> None:
    module = _load_module()
    request = ModelInferRequest(model_name="hello", id="r1")
    name = request.inputs.add(name="name", datatype="BYTES", shape=[1])
    name.contents.bytes_contents.append(b"Ada")

    response = module.hello(request)
    assert (response.model_name, response.id) == ("hello", "r1")
    [output] = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("text_output", "BYTES", [1])
    assert list(output.contents.bytes_contents) == [b"Hello, Ada!"]

    # Raw contents, as tritonclient sends inputs: a length-prefixed element.
    raw = ModelInferRequest(model_name="hello")
    raw.inputs.add(name="name", datatype="BYTES", shape=[1])
    raw.raw_input_contents.append(struct.pack("<I", 3) + b"Bob")
    assert module.hello(raw).outputs[0].contents.bytes_contents[0] == b"Hello, Bob!"
    assert module.hello(ModelInferRequest()).outputs[0].contents.bytes_contents[0] == b"Hello, world!"


def test_the_hook_registers_the_handler_on_an_app() -> None:
    module = _load_module()
    app = AnyServe()
    module.anyserve_register_capabilities(app)
    [handler] = app.handlers
    assert handler.capability == {"type": "hello"}
    assert handler.stream is False
    assert handler.func is module.hello
