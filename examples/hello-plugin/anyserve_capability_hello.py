"""The smallest third-party capability plugin.

It contributes a ``type=hello`` capability that answers with a greeting, and
an ``anyserve hello`` command printing the same greeting. Installing the
distribution is all it takes: anyserve finds this module through the
``anyserve`` entry point in ``pyproject.toml``.
"""

from __future__ import annotations

from typing import Any

from anyserve import AnyServe, Context, ModelInferRequest, ModelInferResponse, hookimpl
from anyserve.tensors import decode_inputs


def greeting(name: str) -> str:
    return f"Hello, {name}!"


def _name(request: ModelInferRequest) -> str:
    """The optional BYTES input ``name``, inline or as raw contents (how tritonclient sends it)."""
    value = decode_inputs(request).get("name", "world")
    while isinstance(value, list):
        value = value[0] if value else "world"
    return value.decode() if isinstance(value, bytes) else str(value)


def hello(request: ModelInferRequest, context: Context | None = None) -> ModelInferResponse:
    """Answer a ``type=hello`` request with a BYTES output ``text_output``."""
    response = ModelInferResponse(model_name=request.model_name or "hello", id=request.id)
    output = response.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    output.contents.bytes_contents.append(greeting(_name(request)).encode())
    return response


@hookimpl
def anyserve_register_capabilities(app: AnyServe) -> None:
    app.capability(type="hello")(hello)


@hookimpl
def anyserve_register_commands(cli: Any) -> None:
    @cli.command("hello")
    def hello_command(name: str = "world") -> None:
        """Print the greeting the type=hello capability answers with."""
        print(greeting(name))
