"""The load generator's KServe v2 REST bodies: W1-W3 sent as JSON, W2 also as the binary tensor extension.

What a KServe REST client sends, built once per run (the floor and the router get the same bytes):

* W1: ``POST /v2/models/echo/infer``, ``Content-Type: application/json``, one FP32[16] input as a
  JSON list (values exact in float32, so the router's float32 round trip answers the same text);
* W2 as JSON: the same path, one UINT8[1048576] input as a JSON list of 1,048,576 numbers;
* W2 as the binary extension (what Triton's and KServe's HTTP clients send by default): a JSON header
  whose input says ``binary_data_size``, then the bytes, ``Inference-Header-Content-Length`` giving
  the header's length, and ``binary_data_output`` asking for the answer in binary too;
* W3: ``POST /infer/stream`` with a JSON body (``parameters.tokens = 256``), answered as SSE.

No capability headers on the ``/v2/models/{name}/infer`` calls: the model name in the path is the
capability type, as stock KServe clients name it. Used by ``bench/loadgen.py`` with ``--body json``.
"""

from __future__ import annotations

import json
import os
import random
import struct
from typing import Any

from loadgen_clients import MIB, HttpClient
from loadgen_measure import closed_loop, repeat, stream_loop

SMALL_ELEMENTS = 16
TOKENS = 256
INFER_PATH = "/v2/models/echo/infer"
STREAM_PATH = "/infer/stream"
JSON_HEADERS = {"Content-Type": "application/json"}
STREAM_HEADERS = {"Content-Type": "application/json", "X-Capability-Type": "tokens"}
HEADER_LENGTH = "Inference-Header-Content-Length"
#: Concurrency of the W2-as-JSON cell: a call takes a large fraction of a second of server CPU,
#: so two calls in flight keep the core busy, and more only lengthen the tail after the window.
W2_JSON_CONCURRENCY = 2


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


# -- bodies --------------------------------------------------------------------------


def small_json() -> tuple[bytes, list[float]]:
    """W1: FP32[16] as a JSON list; each value exact in float32."""
    rng = random.Random(1)
    floats = [rng.uniform(-1.0, 1.0) for _ in range(SMALL_ELEMENTS)]
    values = list(struct.unpack(f"<{SMALL_ELEMENTS}f", struct.pack(f"<{SMALL_ELEMENTS}f", *floats)))
    body = {"id": "w1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [SMALL_ELEMENTS], "data": values}]}
    return dumps(body), values


def big_json(size: int) -> tuple[bytes, list[int]]:
    """W2: UINT8[size] as a JSON list of numbers."""
    values = list(os.urandom(size))
    body = {"id": "w2", "inputs": [{"name": "x", "datatype": "UINT8", "shape": [size], "data": values}]}
    return dumps(body), values


def big_binary(size: int) -> tuple[bytes, dict[str, str], bytes]:
    """W2 as the binary extension: JSON header + raw bytes, the answer asked for in binary."""
    raw = os.urandom(size)
    tensor = {"name": "x", "datatype": "UINT8", "shape": [size], "parameters": {"binary_data_size": size}}
    header = dumps({"id": "w2", "inputs": [tensor], "parameters": {"binary_data_output": True}})
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + raw, headers, raw


def stream_json(tokens: int = TOKENS) -> bytes:
    return dumps({"id": "w3", "inputs": [], "parameters": {"tokens": tokens}})


# -- checks (one call parsed, before measuring) -----------------------------------------


async def _one(client: HttpClient, payload: bytes, headers: dict[str, str]) -> tuple[bytes, bytes]:
    conn = await client.conn()
    body = await client.unary(conn, payload, "", INFER_PATH, headers)()
    head = conn.last_head
    await client.close()
    return head, body


def _check_output(output: dict[str, Any], datatype: str, shape: list[int]) -> None:
    assert (output["name"], output["datatype"], list(output["shape"])) == ("x", datatype, shape), output


async def check_json_echo(client: HttpClient, payload: bytes, datatype: str, values: list[Any]) -> None:
    _, body = await _one(client, payload, JSON_HEADERS)
    answer = json.loads(body)
    output = answer["outputs"][0]
    _check_output(output, datatype, [len(values)])
    assert output["data"] == values, "JSON echo mismatch"


async def check_binary_echo(client: HttpClient, payload: bytes, headers: dict[str, str], raw: bytes) -> None:
    head, body = await _one(client, payload, headers)
    lines = head.decode("latin-1").lower().split("\r\n")
    found = [line.split(":", 1)[1] for line in lines if line.startswith(HEADER_LENGTH.lower() + ":")]
    assert found, f"no {HEADER_LENGTH} in the answer: {head!r}"
    length = int(found[0])
    answer = json.loads(body[:length])
    output = answer["outputs"][0]
    _check_output(output, "UINT8", [len(raw)])
    assert output["parameters"]["binary_data_size"] == len(raw), output
    assert body[length:] == raw, "binary echo mismatch"


async def check_json_stream(client: HttpClient, payload: bytes) -> None:
    conn = await client.conn()
    n = await client.streamer(conn, payload, STREAM_HEADERS)(lambda: None)
    await client.close()
    assert n == TOKENS, f"expected {TOKENS} tokens, got {n}"


# -- cells -------------------------------------------------------------------------------


async def unary_cell(
    client: HttpClient,
    payload: bytes,
    headers: dict[str, str],
    concurrency: int,
    args: Any,
    latencies: bool,
    by_wall: bool = False,
) -> dict[str, Any]:
    """A closed loop of POSTs to ``INFER_PATH``.

    ``by_wall``: the rate is every call started in the window over the time until the last one ended
    (the window's own count is kept as ``window_rate``), for calls so slow that few end inside it.
    """
    conns = await client.pool(concurrency)
    factory = lambda i: client.unary(conns[i], payload, "", INFER_PATH, headers)  # noqa: E731

    async def measure(seconds: float) -> dict[str, Any]:
        result = await closed_loop(factory, concurrency, seconds, latencies)
        if by_wall:
            result["window_rate"] = result["rate"]
            result["rate"] = result["ops_total"] / result["wall_s"]
        return result

    await measure(args.warmup)
    result = await repeat(args.runs, lambda: measure(args.duration))
    await client.close()
    return result


async def stream_cell(client: HttpClient, payload: bytes, concurrency: int, args: Any) -> dict[str, Any]:
    conns = await client.pool(concurrency)
    factory = lambda i: client.streamer(conns[i], payload, STREAM_HEADERS)  # noqa: E731
    await stream_loop(factory, concurrency, args.warmup)
    result = await repeat(args.runs, lambda: stream_loop(factory, concurrency, args.duration))
    await client.close()
    return result


# -- workloads ---------------------------------------------------------------------------


async def workload_w1(client: HttpClient, args: Any) -> dict[str, Any]:
    payload, values = small_json()
    await check_json_echo(client, payload, "FP32", values)
    return {
        "c1": await unary_cell(client, payload, JSON_HEADERS, 1, args, latencies=True),
        "c64": await unary_cell(client, payload, JSON_HEADERS, 64, args, latencies=False),
    }


async def workload_w2(client: HttpClient, args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    binary, headers, raw = big_binary(MIB)
    await check_binary_echo(client, binary, headers, raw)
    out["c8_binary"] = await unary_cell(client, binary, headers, 8, args, latencies=False)
    del binary, raw
    payload, values = big_json(MIB)
    await check_json_echo(client, payload, "UINT8", values)
    del values
    cell = await unary_cell(client, payload, JSON_HEADERS, W2_JSON_CONCURRENCY, args, latencies=False, by_wall=True)
    out[f"c{W2_JSON_CONCURRENCY}_json"] = cell
    for cell in out.values():
        cell["req_rate"] = cell["rate"]  # one MiB echoed (each way) per request: MiB/s == req/s
    return out


async def workload_w3(client: HttpClient, args: Any) -> dict[str, Any]:
    payload = stream_json()
    await check_json_stream(client, payload)
    return {"c16": await stream_cell(client, payload, 16, args), "c1": await stream_cell(client, payload, 1, args)}


WORKLOADS = {"W1": workload_w1, "W2": workload_w2, "W3": workload_w3}
