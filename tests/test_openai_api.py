"""The router's OpenAI-compatible API, called by the official ``openai`` SDK and by ``curl``, unchanged.

One router and one replica serving ``tests/apps/llm_app.py`` (LLM-convention
handlers over a fake word-reversing engine: the tests are about the
protocol, not a model) are started as a user would, with an alias
configured. Errors are checked as the SDK's exception classes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from processes import free_port, router_with_replica
from router_http import register

ALIASES = """
[openai.aliases]
gpt-4o-mini = { type = "chat", model = "tiny-chat" }

[router]
max_body_bytes = 65536
"""
HELLO = [{"role": "user", "content": "hello big world"}]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A router (with an alias) and one llm_app replica registered with it; yields the router's URL."""
    config = tmp_path_factory.mktemp("openai") / "anyserve.toml"
    config.write_text(ALIASES)
    with router_with_replica("llm_app:app", config=config, replica_id="llm-1") as url:
        yield url


@pytest.fixture
def client(cluster: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{cluster}/v1", api_key="sk-anything", max_retries=0, timeout=30) as sdk:
        yield sdk


# -- models --------------------------------------------------------------------------------------


def test_models_list_shows_every_offered_model_and_the_alias(client):
    ids = {model.id for model in client.models.list()}
    assert {"tiny-chat", "tiny-complete", "tiny-embed", "gpt-4o-mini", "regional"} <= ids
    assert client.models.retrieve("tiny-embed").id == "tiny-embed"


def test_an_unknown_model_is_a_404_listing_the_available_ones(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "tiny-chat" in error["message"] and "no-such-model" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# -- chat ------------------------------------------------------------------------------------------


def test_chat_answers_with_usage_counted_by_the_engine(client):
    answer = client.chat.completions.create(model="tiny-chat", messages=HELLO, user="u-1", seed=None)
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "[tiny-chat] world big hello"
    assert choice.finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (3, 4, 7)
    assert answer.model == "tiny-chat" and answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")


def test_max_tokens_ends_with_length_and_max_completion_tokens_wins(client):
    short = client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=2)
    assert short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content == "[tiny-chat] world"
    newer = client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=1, max_completion_tokens=3)
    assert newer.usage.completion_tokens == 3


def test_stop_and_seed_reach_the_engine_and_seeded_runs_repeat(client):
    stopped = client.chat.completions.create(model="tiny-chat", messages=HELLO, stop=["big"])
    assert stopped.choices[0].message.content == "[tiny-chat] world"
    runs = {
        client.chat.completions.create(model="tiny-chat", messages=HELLO, seed=7).choices[0].message.content
        for _ in range(3)
    }
    assert len(runs) == 1


def test_logprobs_come_back_when_the_engine_gives_them(client):
    answer = client.chat.completions.create(model="tiny-chat", messages=HELLO, logprobs=True, top_logprobs=0)
    tokens = [entry.token for entry in answer.choices[0].logprobs.content]
    assert "".join(tokens) == answer.choices[0].message.content


def test_unknown_fields_and_sampling_reach_the_handler(client):
    answer = client.chat.completions.create(
        model="echo-extra",
        messages=[{"role": "system", "content": "be brief"}, *HELLO],
        temperature=0.5,
        top_p=0.9,
        stop="END",
        user="u-7",
        response_format={"type": "json_object"},
        extra_body={"engine_knob": 3},
        extra_headers={"OpenAI-Organization": "org-x", "OpenAI-Project": "p"},
    )
    seen = json.loads(answer.choices[0].message.content)
    assert seen["extra"] == {"engine_knob": 3, "response_format": {"type": "json_object"}}
    assert (seen["temperature"], seen["top_p"], seen["stop"], seen["user"]) == (0.5, 0.9, ["END"], "u-7")
    assert seen["roles"] == ["system", "user"] and seen["model"] == "echo-extra"


def test_streaming_chat_sends_the_same_text_then_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="tiny-chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[tiny-chat] world big hello"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 7
    assert all(c.usage is None for c in chunks[:-1])


def test_the_async_client_calls_and_streams(cluster):
    async def calls() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=f"{cluster}/v1", api_key="k", max_retries=0) as sdk:
            whole = await sdk.chat.completions.create(model="tiny-chat-async", messages=HELLO)
            stream = await sdk.chat.completions.create(model="tiny-chat-async", messages=HELLO, stream=True)
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return whole.choices[0].message.content, "".join(parts)

    whole, streamed = asyncio.run(calls())
    assert whole == streamed == "[tiny-chat-async] world big hello"


def test_an_alias_maps_a_name_to_a_capability(client):
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert answer.model == "gpt-4o-mini"
    assert answer.choices[0].message.content.startswith("[tiny-chat]")


def test_capability_headers_add_keys_to_the_query(client):
    for region in ("eu", "us"):
        answer = client.chat.completions.create(
            model="regional", messages=HELLO, extra_headers={"X-Capability-Region": region}
        )
        assert answer.choices[0].message.content == f"served in {region}"


def test_capabilities_served_only_one_way_are_served_both_ways(client):
    joined = client.chat.completions.create(model="legacy-stream", messages=HELLO)
    assert joined.choices[0].message.content == "one two three"
    chunks = client.chat.completions.create(model="legacy-unary", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "all at once"


# -- completions, embeddings, responses ------------------------------------------------------------


def test_completions_whole_and_streamed(client):
    whole = client.completions.create(model="tiny-complete", prompt="a b c", max_tokens=3)
    assert whole.choices[0].text == "[tiny-complete] c b" and whole.choices[0].finish_reason == "length"
    assert whole.usage.prompt_tokens == 3
    parts = client.completions.create(model="tiny-complete", prompt="a b c", stream=True)
    assert "".join(c.choices[0].text for c in parts) == "[tiny-complete] c b a"


def test_embeddings_as_floats_and_as_base64(client):
    floats = client.embeddings.create(model="tiny-embed", input=["one two", "three"], encoding_format="float")
    assert [d.embedding for d in floats.data] == [[7.0, 2.0, 1.0, -1.0], [5.0, 1.0, 1.0, -1.0]]
    assert floats.usage.prompt_tokens == 3
    # The SDK asks for base64 by default and decodes it itself.
    default = client.embeddings.create(model="tiny-embed", input="one two")
    assert default.data[0].embedding == [7.0, 2.0, 1.0, -1.0]
    raw = httpx.post(
        f"{client.base_url}embeddings", json={"model": "tiny-embed", "input": "x", "encoding_format": "base64"}
    ).json()
    assert struct.unpack("<4f", base64.b64decode(raw["data"][0]["embedding"])) == (1.0, 1.0, 1.0, -1.0)


def test_responses_text_in_text_out_and_streamed_events(client):
    response = client.responses.create(model="tiny-chat", input="what now", instructions="be kind")
    assert response.output_text == "[tiny-chat] now what"
    assert response.status == "completed" and response.usage.output_tokens == 3
    events = list(client.responses.create(model="tiny-chat", input="what now", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "[tiny-chat] now what"
    assert events[-1].response.output_text == "[tiny-chat] now what"


# -- errors ------------------------------------------------------------------------------------------


def test_bad_bodies_are_400_naming_the_field(client, cluster):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-chat", messages=[])
    assert caught.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-chat", messages=HELLO, n=2)
    assert caught.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-chat", messages=HELLO, temperature=7)
    assert caught.value.body["param"] == "temperature"
    answer = httpx.post(f"{cluster}/v1/chat/completions", content=b"{not json")
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"


def test_an_oversize_body_is_413(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "x" * 70_000}])
    assert caught.value.status_code == 413
    assert "max_body_bytes" in caught.value.body["message"]


def test_no_capacity_right_now_is_503_with_retry_after(client):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="never-starts", messages=HELLO)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "1"
    message = caught.value.body["message"]  # why, in one line: no traceback, no file of the replica's machine
    assert "RuntimeError: weights not found" in message
    assert "Traceback" not in message and 'File "' not in message


def test_a_handler_that_raises_is_a_500_with_its_exception(client):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="broken-chat", messages=HELLO)
    assert caught.value.status_code == 500
    assert "ValueError: the engine exploded" in caught.value.body["message"]


def test_a_replica_that_cannot_be_reached_is_a_502(cluster, client):
    with httpx.Client(base_url=cluster) as http:
        register(http, "gone", f"127.0.0.1:{free_port()}", [{"type": "chat", "model": "ghost"}])
        try:
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model="ghost", messages=HELLO)
            assert caught.value.status_code == 502
        finally:
            http.post("/deregister", json={"replica_id": "gone"})


def test_unknown_paths_and_methods_answer_in_openai_shape(cluster):
    missing = httpx.get(f"{cluster}/v1/fine_tuning/jobs")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong = httpx.get(f"{cluster}/v1/chat/completions")
    assert wrong.status_code == 405 and "POST" in wrong.json()["error"]["message"]


# -- curl, cancellation ---------------------------------------------------------------------------------


def test_curl_streams_sse_chunks_ending_with_done(cluster):
    body = json.dumps({"model": "tiny-chat", "messages": HELLO, "stream": True})
    out = subprocess.run(
        [
            "curl",
            "-sN",
            f"{cluster}/v1/chat/completions",
            "-H",
            "Authorization: Bearer sk-x",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    events = [line.removeprefix("data: ") for line in out.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "[tiny-chat] world big hello"


def _stopped(marker: Path, timeout: float = 10.0) -> tuple[float, int]:
    deadline = time.monotonic() + timeout
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline, "the handler did not stop after its client left"
        time.sleep(0.005)
    stopped_at, produced = marker.read_text().split()
    return float(stopped_at), int(produced)


#: A cancelled handler must stop within this (the issue's bound), measured on the handler's side.
CANCEL_BOUND_S = 0.1


def test_a_streaming_client_that_disconnects_stops_the_handler(cluster, tmp_path):
    marker = tmp_path / "stream-stopped"
    body = {"model": "slow-chat", "messages": HELLO, "stream": True, "marker": str(marker)}
    with httpx.Client(timeout=30) as http, http.stream("POST", f"{cluster}/v1/chat/completions", json=body) as answer:
        lines = answer.iter_lines()
        assert sum(1 for line, _ in zip(lines, range(6), strict=False) if line.startswith("data: ")) >= 3
        left_at = time.time()
    stopped_at, produced = _stopped(marker)
    assert produced < 3000
    print(f"stopped {stopped_at - left_at:.4f}s after the client left")
    assert stopped_at - left_at < CANCEL_BOUND_S, f"the handler ran {stopped_at - left_at:.3f}s after the client left"


def test_a_unary_client_that_disconnects_stops_the_handler(cluster, tmp_path):
    marker = tmp_path / "unary-stopped"
    body = {"model": "slow-chat", "messages": HELLO, "marker": str(marker)}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{cluster}/v1/chat/completions", json=body, timeout=0.5)
    left_at = time.time()
    stopped_at, produced = _stopped(marker)
    assert produced < 3000
    print(f"stopped {stopped_at - left_at:.4f}s after the client left")
    assert stopped_at - left_at < CANCEL_BOUND_S, f"the handler ran {stopped_at - left_at:.3f}s after the client left"
