"""One ``@app.chat`` function, every protocol: KServe v2 gRPC and REST, Triton's generate extension.

The same llm_app handlers the OpenAI tests call answer ``ModelInfer`` and
``ModelStreamInfer`` straight to the replica, ``POST /infer/stream``
through the router, and ``POST /v2/models/{name}/versions/{v}/generate``
(and ``generate_stream``) with the tensors and flat bodies the convention
defines (``text_input`` or ``messages`` in, ``text_output`` and
``finish_reason`` out, usage as parameters).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from kserve import Wire
from processes import router_with_replica
from router_http import sse_events

from anyserve.protocol import messages as pb

CHAT = {"type": "chat", "model": "tiny-chat"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, str]]:
    """``(router URL, replica gRPC endpoint)`` for one llm_app replica registered with a router."""
    with router_with_replica("llm_app:app", replica_id="llm-kserve") as url:
        endpoint = httpx.get(f"{url}/registry").json()["replicas"][0]["endpoint"]
        yield url, endpoint


def chat_request(**parameters: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="chat", id="r-1")
    tensor = request.inputs.add(name="messages", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(json.dumps([{"role": "user", "content": "a b c"}]).encode())
    for name, value in parameters.items():
        if isinstance(value, int):
            request.parameters[name].int64_param = value
        else:
            request.parameters[name].string_param = str(value)
    return request


def text_of(response: pb.ModelInferResponse, name: str = "text_output") -> str:
    return "".join(b.decode() for t in response.outputs if t.name == name for b in t.contents.bytes_contents)


def test_model_infer_answers_the_whole_text_with_usage(cluster):
    _, endpoint = cluster
    wire = Wire(endpoint)
    try:
        answer = wire.infer(chat_request(max_tokens=2), CHAT)
    finally:
        wire.close()
    assert text_of(answer) == "[tiny-chat] c"
    assert text_of(answer, "finish_reason") == "length"
    assert answer.parameters["prompt_tokens"].int64_param == 3
    assert answer.parameters["completion_tokens"].int64_param == 2
    assert answer.id == "r-1"


def test_model_stream_infer_sends_one_response_per_delta(cluster):
    _, endpoint = cluster
    wire = Wire(endpoint)
    try:
        responses = [r.infer_response for r in wire.stream([chat_request()], CHAT)]
    finally:
        wire.close()
    texts = [text_of(r) for r in responses if r.outputs]
    assert "".join(texts) == "[tiny-chat] c b a"
    last = [r for r in responses if r.outputs][-1]
    assert text_of(last, "finish_reason") == "stop"
    assert last.parameters["completion_tokens"].int64_param == 4


def test_infer_stream_through_the_router_with_a_json_body(cluster):
    url, _ = cluster
    body = {
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["p q"]}],
        "parameters": {"stop.json": json.dumps(["p"])},
    }
    headers = {"X-Capability-Type": "chat", "X-Capability-Model": "tiny-chat"}
    with httpx.stream("POST", f"{url}/infer/stream", json=body, headers=headers, timeout=30) as answer:
        events = list(sse_events(answer.iter_lines()))
    outputs = [
        o["data"][0]
        for name, data in events
        if name == "message"
        for o in data["outputs"]
        if o["name"] == "text_output"
    ]
    assert "".join(outputs) == "[tiny-chat] q"  # " p" holds the stop text
    assert events[-1] == ("end", "[DONE]")


def test_triton_generate_answers_a_flat_object(cluster):
    url, _ = cluster
    answer = httpx.post(
        f"{url}/v2/models/chat/versions/tiny-chat/generate", json={"text_input": "a b c", "max_tokens": 3}
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["text_output"] == "[tiny-chat] c b" and data["finish_reason"] == "length"
    assert (data["prompt_tokens"], data["completion_tokens"]) == (3, 3)
    assert data["model_name"] == "chat" and data["model_version"] == "tiny-chat"


def test_triton_generate_stream_sends_one_event_per_delta(cluster):
    url, _ = cluster
    body = {"messages": [{"role": "user", "content": "a b"}], "parameters": {"seed": 3}}
    with httpx.stream("POST", f"{url}/v2/models/chat/versions/tiny-chat/generate_stream", json=body) as answer:
        assert answer.status_code == 200
        events = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: ")]
    assert len(events) == 4 and events[-1]["finish_reason"] == "stop"
    assert sorted("".join(e["text_output"] for e in events).split()) == ["[tiny-chat]", "a", "b"]


def test_a_generate_body_without_text_is_a_400(cluster):
    url, _ = cluster
    answer = httpx.post(f"{url}/v2/models/chat/versions/tiny-chat/generate", json={"max_tokens": 3})
    assert answer.status_code == 400
    assert "text_input" in answer.json()["error"]
