"""The load generator's CHAT workload: the ``bench-tokens`` chat engine through the router, OpenAI vs KServe.

The same handler (``@app.chat(model="bench-tokens")`` in ``servers/bench_app.py``, a no-compute token
engine) is called three ways, each body built once per run:

* OpenAI streaming: ``POST /v1/chat/completions`` with ``"stream": true`` and
  ``stream_options.include_usage``; a token is a ``data:`` chunk whose ``choices[0].delta.content``
  is not empty, read until ``data: [DONE]``;
* KServe streaming: ``POST /infer/stream`` with ``X-Capability-Type: chat`` and
  ``X-Capability-Model: bench-tokens`` and a KServe v2 JSON body (``messages`` BYTES [1] holding the
  JSON messages, ``max_tokens`` as a parameter); a token is an SSE event whose ``text_output`` output
  holds a non-empty text, read until ``event: end``;
* unary: the OpenAI call without ``stream`` (and, for comparison, the KServe call to ``POST /infer``),
  a few tokens each, req/s at c=64.

The two streaming paths are measured in alternating runs (A B, B A, ...), each run on connections
of its own, so background load that drifts during the cell lands on both alike. Tokens are recognised by a
byte search on each event (no JSON parsing while measuring, the same cost on both paths); every path's
answer is parsed whole once before it is measured, and the byte search is checked against it.
Used by ``bench/loadgen.py`` (a script; this module is imported from its directory).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from loadgen_clients import HttpClient, HttpConn, HttpError
from loadgen_measure import closed_loop, median_run, repeat, stream_loop

MODEL = "bench-tokens"
#: Tokens per streamed answer, and per unary answer.
STREAM_TOKENS = 256
UNARY_TOKENS = 16
UNARY_CONCURRENCY = 64
OPENAI_PATH = "/v1/chat/completions"
STREAM_PATH = "/infer/stream"
INFER_PATH = "/infer"
MESSAGES = [{"role": "user", "content": "Count for me, please."}]
OPENAI_HEADERS = {"Content-Type": "application/json"}
KSERVE_HEADERS = {"Content-Type": "application/json", "X-Capability-Type": "chat", "X-Capability-Model": MODEL}


def expected(tokens: int) -> str:
    """What the bench engine answers: ``t0``, ``t1``, ... (``servers/echo_logic.token_text``)."""
    return "".join(f"t{i}" for i in range(tokens))


Runner = Callable[[Callable[[], None]], Awaitable[int]]


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


# -- bodies ----------------------------------------------------------------------------------


def openai_body(max_tokens: int, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return dumps(body)


def kserve_body(max_tokens: int) -> bytes:
    tensor = {"name": "messages", "datatype": "BYTES", "shape": [1], "data": [json.dumps(MESSAGES)]}
    return dumps({"inputs": [tensor], "parameters": {"max_tokens": max_tokens}})


# -- tokens in an SSE event, by byte search ----------------------------------------------------

_DONE = b"data: [DONE]"
_CONTENT = b'"content":"'
_EMPTY_CONTENT = b'"content":""'
_TEXT_OUTPUT = b'"name":"text_output"'
_DATA = b'"data":['


def openai_token(event: bytes) -> bool:
    """A chunk whose delta carries text (the role-only, finish-only and usage chunks carry none)."""
    return _CONTENT in event and _EMPTY_CONTENT not in event


def kserve_token(event: bytes) -> bool:
    """An event whose ``text_output`` output holds a non-empty text (``"data":[""]`` is empty)."""
    i = event.find(_TEXT_OUTPUT)
    if i < 0:
        return False
    j = event.find(_DATA, i)
    return j >= 0 and event[j + 8 : j + 11] != b'""]'


async def _open(conn: HttpConn, head: bytes, body: bytes) -> None:
    assert conn.writer is not None and conn.reader is not None
    conn.writer.write(head)
    conn.writer.write(body)
    status, length = await conn._response_head()
    if status != 200:
        data = await conn.reader.readexactly(length) if length is not None else b""
        raise HttpError(f"HTTP {status}: {data[:300]!r}")


def openai_streamer(conn: HttpConn, payload: bytes) -> Runner:
    """One OpenAI stream per call: ``on_token`` per chunk with content, until ``data: [DONE]``."""
    head = conn.head(OPENAI_PATH, len(payload), OPENAI_HEADERS)

    async def run(on_token: Callable[[], None]) -> int:
        await _open(conn, head, payload)
        buffer = b""
        n = 0
        done = False
        async for chunk in conn._chunks():
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if openai_token(event):
                    on_token()
                    n += 1
                elif event.startswith(_DONE):
                    done = True
                elif event.startswith(b'data: {"error"'):
                    raise HttpError(event.decode(errors="replace"))
        if not done:
            raise HttpError("stream ended without 'data: [DONE]'")
        return n

    return run


def kserve_streamer(conn: HttpConn, payload: bytes) -> Runner:
    """One ``/infer/stream`` call: ``on_token`` per event with text, until ``event: end``."""
    head = conn.head(STREAM_PATH, len(payload), KSERVE_HEADERS)

    async def run(on_token: Callable[[], None]) -> int:
        await _open(conn, head, payload)
        buffer = b""
        n = 0
        ended = False
        async for chunk in conn._chunks():
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if kserve_token(event):
                    on_token()
                    n += 1
                elif event.startswith(b"event: end"):
                    ended = True
                elif event.startswith(b"event: error"):
                    raise HttpError(event.decode(errors="replace"))
        if not ended:
            raise HttpError("stream ended without 'event: end'")
        return n

    return run


# -- checks (one answer parsed whole, before measuring) ------------------------------------------


async def _whole(client: HttpClient, path: str, payload: bytes, headers: dict[str, str]) -> bytes:
    conn = await client.conn()
    body = await client.unary(conn, payload, "", path, headers)()
    await client.close()
    return body


def _events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e.strip()]


async def check_openai_stream(client: HttpClient, payload: bytes) -> None:
    events = _events(await _whole(client, OPENAI_PATH, payload, OPENAI_HEADERS))
    assert events[-1] == _DONE, events[-1:]
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == expected(STREAM_TOKENS), f"OpenAI stream: got {text[:60]!r}..."
    with_text = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(with_text) == STREAM_TOKENS, f"expected {STREAM_TOKENS} chunks with content, got {len(with_text)}"
    assert with_text[-1]["choices"][0]["finish_reason"] == "length", with_text[-1]
    assert chunks[-1]["usage"]["completion_tokens"] == STREAM_TOKENS, chunks[-1]
    fast = sum(1 for e in events if openai_token(e))
    assert fast == STREAM_TOKENS, f"byte search counts {fast} OpenAI tokens, parsing {STREAM_TOKENS}"


async def check_kserve_stream(client: HttpClient, payload: bytes) -> None:
    events = _events(await _whole(client, STREAM_PATH, payload, KSERVE_HEADERS))
    assert events[-1].startswith(b"event: end"), events[-1:]
    answers = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    texts = [o["data"][0] for a in answers for o in a["outputs"] if o["name"] == "text_output"]
    assert "".join(texts) == expected(STREAM_TOKENS), f"/infer/stream: got {''.join(texts)[:60]!r}..."
    assert sum(1 for t in texts if t) == STREAM_TOKENS, texts[:3]
    last = answers[-1]
    finish = [o["data"][0] for o in last["outputs"] if o["name"] == "finish_reason"]
    assert finish == ["length"] and last["parameters"]["completion_tokens"] == STREAM_TOKENS, last
    fast = sum(1 for e in events if kserve_token(e))
    assert fast == STREAM_TOKENS, f"byte search counts {fast} /infer/stream tokens, parsing {STREAM_TOKENS}"


async def check_openai_unary(client: HttpClient, payload: bytes) -> None:
    answer = json.loads(await _whole(client, OPENAI_PATH, payload, OPENAI_HEADERS))
    choice = answer["choices"][0]
    assert choice["message"]["content"] == expected(UNARY_TOKENS), answer
    assert choice["finish_reason"] == "length" and answer["usage"]["completion_tokens"] == UNARY_TOKENS, answer


async def check_kserve_unary(client: HttpClient, payload: bytes) -> None:
    answer = json.loads(await _whole(client, INFER_PATH, payload, KSERVE_HEADERS))
    text = [o["data"][0] for o in answer["outputs"] if o["name"] == "text_output"]
    assert text == [expected(UNARY_TOKENS)], answer
    assert answer["parameters"]["completion_tokens"] == UNARY_TOKENS, answer


# -- cells ---------------------------------------------------------------------------------------


async def paired_stream_cells(
    client: HttpClient, streamers: dict[str, Callable[[HttpConn], Runner]], concurrency: int, args: Any
) -> dict[str, dict[str, Any]]:
    """Each path's stream cell, their measured runs alternating (A B, B A, ...); each path's median run.

    Every run (and each path's warm-up) opens ``concurrency`` fresh connections before its window and
    closes them after: a path's connections would otherwise sit idle through the other path's runs,
    past the server's keep-alive timeout (uvicorn's is 5 s). ``pair_ratios`` (in the first path's cell)
    is each run of the first path over the run of the second next to it: the ratio without drift
    between runs; ``pair_ttft_diff_ms`` the same for the TTFT p50, as a difference.
    """

    async def run(name: str, seconds: float) -> dict[str, Any]:
        conns = [HttpConn(client.host, client.port) for _ in range(concurrency)]
        try:
            for conn in conns:
                await conn.connect()
            streamer = streamers[name]
            return await stream_loop(lambda i: streamer(conns[i]), concurrency, seconds)
        finally:
            for conn in conns:
                await conn.close()

    names = list(streamers)
    for name in names:
        await run(name, args.warmup)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(args.runs):
        for name in names if r % 2 == 0 else reversed(names):
            runs[name].append(await run(name, args.duration))
    out = {name: median_run(runs[name]) for name in names}
    first, second = names[0], names[1]
    out[first]["pair_ratios"] = [
        round(a["rate"] / b["rate"], 3) for a, b in zip(runs[first], runs[second], strict=True) if b["rate"]
    ]
    out[first]["pair_ttft_diff_ms"] = [
        round(a["ttft_p50_ms"] - b["ttft_p50_ms"], 3) for a, b in zip(runs[first], runs[second], strict=True)
    ]
    return out


async def unary_cell(
    client: HttpClient, path: str, payload: bytes, headers: dict[str, str], concurrency: int, args: Any
) -> dict[str, Any]:
    conns = await client.pool(concurrency)
    factory = lambda i: client.unary(conns[i], payload, "", path, headers)  # noqa: E731
    await closed_loop(factory, concurrency, args.warmup, False)
    result = await repeat(args.runs, lambda: closed_loop(factory, concurrency, args.duration, False))
    await client.close()
    return result


# -- the workload ----------------------------------------------------------------------------------


async def workload_chat(client: Any, args: Any) -> dict[str, Any]:
    if not isinstance(client, HttpClient):
        raise HttpError("CHAT speaks HTTP to the router (--proto http)")
    openai_stream, kserve_stream = openai_body(STREAM_TOKENS, True), kserve_body(STREAM_TOKENS)
    await check_openai_stream(client, openai_stream)
    await check_kserve_stream(client, kserve_stream)
    streamers = {
        "openai": lambda conn: openai_streamer(conn, openai_stream),
        "kserve": lambda conn: kserve_streamer(conn, kserve_stream),
    }
    out: dict[str, Any] = {}
    for concurrency in (16, 1):
        for name, cell in (await paired_stream_cells(client, streamers, concurrency, args)).items():
            out[f"{name}_c{concurrency}"] = cell
    openai_unary, kserve_unary = openai_body(UNARY_TOKENS, False), kserve_body(UNARY_TOKENS)
    await check_openai_unary(client, openai_unary)
    await check_kserve_unary(client, kserve_unary)
    c = UNARY_CONCURRENCY
    out[f"openai_unary_c{c}"] = await unary_cell(client, OPENAI_PATH, openai_unary, OPENAI_HEADERS, c, args)
    out[f"kserve_unary_c{c}"] = await unary_cell(client, INFER_PATH, kserve_unary, KSERVE_HEADERS, c, args)
    for key in ("pair_ratios", "pair_ttft_diff_ms"):
        for cell in ("openai_c16", "openai_c1"):
            values = out[cell].get(key)
            if values:
                out[cell][key + "_median"] = statistics.median(values)
    return out


WORKLOADS = {"CHAT": workload_chat}
