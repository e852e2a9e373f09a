"""The smallest third-party capability plugin.

It contributes a ``type=hello`` capability that answers with a greeting, and
an ``anyserve hello`` command printing the same greeting. Installing the
distribution is all it takes: anyserve finds this module through the
``anyserve`` entry point in ``pyproject.toml``.
"""

from __future__ import annotations

import struct
from typing import Any

from anyserve import AnyServe, Context, ModelInferRequest, ModelInferResponse, hookimpl


def greeting(name: str) -> str:
    return f"Hello, {name}!"


def _name(request: ModelInferRequest) -> str:
    """The optional BYTES input ``name``, inline or as raw contents (how tritonclient sends it)."""
    for index, tensor in enumerate(request.inputs):
        if tensor.name != "name":
            continue
        if tensor.contents.bytes_contents:
            return tensor.contents.bytes_contents[0].decode()
        if index < len(request.raw_input_contents):
            raw = request.raw_input_contents[index]  # each element: 4-byte little-endian length, then bytes
            (length,) = struct.unpack_from("<I", raw)
            return raw[4 : 4 + length].decode()
    return "world"


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
