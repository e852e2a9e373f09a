"""The demo's real chat model: SmolLM2-135M on llama.cpp, when the engine plugin is installed.

The plugin (``plugins/anyserve-engine-llamacpp``, entry point ``llamacpp``)
contributes ``{type: chat, model: smollm2-135m}`` as a worker class; the demo
serves it from a replica started with no ``--app``, its plugins narrowed to
that one (plus what the replica runs on), and the OpenAI step calls it. Where
it is not installed, or disabled, the demo keeps its simulated ``demo-small``
and says how to install the real one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from anyserve.plugins import LOAD_ENV, PluginManager

PLUGIN = "llamacpp"
DISTRIBUTION = "anyserve-engine-llamacpp"
#: What the real model's replica loads: the CLI (for `start`), the engine, the transport and the object store the
#: demo's replicas share.
PLUGINS = f"anyserve-cli,{DISTRIBUTION},anyserve-transport-unix,anyserve-objects-fs"
INSTALL = "plugins/anyserve-engine-llamacpp/install.sh .venv"


@dataclass(frozen=True)
class RealModel:
    """The engine plugin's model, as its settings (``ANYSERVE_LLAMACPP_*``) name it."""

    name: str
    #: Environment for the replica that serves it.
    env: dict[str, str]


def find(pm: PluginManager, simulated: bool = False) -> tuple[RealModel | None, str]:
    """The real chat model the demo can serve, or None and one line saying why not and how to get it."""
    why = _unusable(pm, simulated)
    if why is not None:
        return None, why
    # The plugin's own settings (ANYSERVE_LLAMACPP_*): the model's name, and whether its GGUF file is there.
    settings_module = pm.get_plugin(PLUGIN).model
    try:
        settings = settings_module.settings_from_env()
        settings_module.model_path(settings)
    except Exception as exc:  # SettingsError, or a plugin that changed shape: either way, no real model
        return None, f"the real model cannot be served, so demo-small is simulated: {exc}"
    return RealModel(settings.model_name, {LOAD_ENV: PLUGINS}), ""


def _unusable(pm: PluginManager, simulated: bool) -> str | None:
    if simulated:
        return "--simulated: the simulated demo-small stands in for the real model (SmolLM2-135M on llama.cpp)"
    install = f"install it with `{INSTALL}` from the repository (`./dev test` installs it too)"
    failure = next((f for f in pm.failures if f.name == PLUGIN), None)
    if failure is not None and failure.status == "disabled":
        return f"the real model's plugin ({DISTRIBUTION}) is {failure.reason}: the simulated demo-small stands in"
    if failure is not None:
        return f"the real model's plugin ({DISTRIBUTION}) failed to load, so demo-small is simulated ({failure.reason})"
    if PLUGIN not in pm.origins:
        return f"demo-small is simulated; for a real model (SmolLM2-135M on llama.cpp) here, {install}"
    if importlib.util.find_spec("llama_cpp") is None:
        return f"demo-small is simulated: llama-cpp-python is missing; for the real model here, {install}"
    return None
