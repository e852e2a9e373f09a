"""The load generator's requests and workloads (W1, W2, W3, OBJ): each checks the answer once, then measures.

Used by ``bench/loadgen.py`` (a script; this module is imported from its directory).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from loadgen_clients import MIB, GrpcClient, HttpClient
from loadgen_measure import Call, closed_loop, pct, repeat, stream_loop

from anyserve.protocol import messages as pb

SMALL_BYTES = 64
TOKENS = 256


# -- requests -------------------------------------------------------------------


def small_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="echo", id="w1")
    request.inputs.add(name="x", datatype="FP32", shape=[SMALL_BYTES // 4])
    request.raw_input_contents.append(os.urandom(SMALL_BYTES))
    return request


def big_request(size: int, model: str = "echo") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="w2")
    request.inputs.add(name="x", datatype="UINT8", shape=[size])
    request.raw_input_contents.append(os.urandom(size))
    return request


def stream_request(tokens: int = TOKENS) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tokens", id="w3")
    request.parameters["tokens"].int64_param = tokens
    return request


# -- workloads -----------------------------------------------------------------------


async def unary_cell(client, payload: bytes, capability: str, concurrency: int, args, latencies: bool) -> dict:
    if isinstance(client, GrpcClient):
        factory = lambda i: client.unary(payload, capability)  # noqa: E731
    else:
        conns = await client.pool(concurrency)
        factory = lambda i: client.unary(conns[i], payload, capability)  # noqa: E731
    await closed_loop(factory, concurrency, args.warmup, False)
    result = await repeat(args.runs, lambda: closed_loop(factory, concurrency, args.duration, latencies))
    if isinstance(client, HttpClient):
        await client.close()
    return result


async def stream_cell(client, payload: bytes, concurrency: int, args) -> dict:
    if isinstance(client, GrpcClient):
        factory = lambda i: client.streamer(payload)  # noqa: E731
    else:
        conns = await client.pool(concurrency)
        factory = lambda i: client.streamer(conns[i], payload)  # noqa: E731
    await stream_loop(factory, concurrency, args.warmup)
    result = await repeat(args.runs, lambda: stream_loop(factory, concurrency, args.duration))
    if isinstance(client, HttpClient):
        await client.close()
    return result


async def check_echo(client, payload: bytes, request: pb.ModelInferRequest) -> None:
    """One call parsed and compared: the system echoes what it was sent."""
    if isinstance(client, GrpcClient):
        raw = await client.unary(payload, "echo")()
    else:
        conn = await client.conn()
        raw = await client.unary(conn, payload, "echo")()
        await client.close()
    response = pb.ModelInferResponse.FromString(raw)
    assert list(response.raw_output_contents) == list(request.raw_input_contents), "echo mismatch"
    assert [o.name for o in response.outputs][:1] == [request.inputs[0].name], response.outputs


async def check_stream(client, payload: bytes) -> None:
    if isinstance(client, GrpcClient):
        n = await client.check_stream(payload)
    else:
        conn = await client.conn()
        n = await client.streamer(conn, payload)(lambda: None)
        await client.close()
    assert n == TOKENS, f"expected {TOKENS} tokens, got {n}"


async def workload_w1(client, args) -> dict:
    request = small_request()
    payload = request.SerializeToString()
    await check_echo(client, payload, request)
    out = {
        "c1": await unary_cell(client, payload, "echo", 1, args, latencies=True),
        "c64": await unary_cell(client, payload, "echo", 64, args, latencies=False),
    }
    if args.sync_variant:
        # The same echo as a plain (thread-pool) handler: anyserve only, supplementary.
        payload_sync = payload
        if isinstance(client, GrpcClient):
            metadata = (("x-capability-type", "echo"), ("x-capability-variant", "sync"))
            factory = lambda i: client.unary_with(payload_sync, metadata)  # noqa: E731
            await closed_loop(factory, 64, args.warmup, False)
            out["c64_sync"] = await repeat(args.runs, lambda: closed_loop(factory, 64, args.duration, False))
        else:
            conns = await client.pool(64)
            headers = {**client.headers("echo"), "X-Capability-Variant": "sync"}

            def factory(i: int) -> Call:
                conn = conns[i]
                head = conn.head("/infer", len(payload_sync), headers)
                return lambda: conn.request(head, payload_sync)

            await closed_loop(factory, 64, args.warmup, False)
            out["c64_sync"] = await repeat(args.runs, lambda: closed_loop(factory, 64, args.duration, False))
            await client.close()
    return out


async def workload_w2(client, args) -> dict:
    request = big_request(MIB)
    payload = request.SerializeToString()
    await check_echo(client, payload, request)
    cell = await unary_cell(client, payload, "echo", 8, args, latencies=False)
    cell["req_rate"] = cell["rate"]
    cell["rate"] = cell["rate"] * MIB / MIB  # one MiB echoed (each way) per request: MiB/s == req/s
    return {"c8": cell}


async def workload_w3(client, args) -> dict:
    payload = stream_request().SerializeToString()
    await check_stream(client, payload)
    return {
        "c16": await stream_cell(client, payload, 16, args),
        "c1": await stream_cell(client, payload, 1, args),
    }


async def workload_obj(client, args) -> dict:
    """Objects: inline (raw contents) vs by reference (written to the shared store, ObjRef sent)."""
    from anyserve.client import build_request
    from anyserve_objects_fs import FileStore

    store = FileStore(args.store)
    out: dict[str, Any] = {}
    for mib in args.object_sizes:
        size = mib * MIB
        blob = os.urandom(size)

        # by reference: the client writes the object, then sends only the ref (the same number of
        # calls at every size: the call is meant to cost the same whatever the object's size)
        t0 = time.perf_counter()
        ref = store.create(blob)
        create_ms = (time.perf_counter() - t0) * 1e3
        del blob
        ref_request = build_request("objstat", {"data": ref})
        ref_lat = await _latencies(client, ref_request.SerializeToString(), "objstat", args.object_reps)
        out[f"ref_{mib}"] = {
            "p50_ms": statistics.median(ref_lat),
            "p90_ms": pct(ref_lat, 0.9),
            "create_ms": create_ms,
            "n": args.object_reps,
        }
        store.delete(ref)

        # inline: the object travels in the request body
        if mib > args.inline_max_mib:
            continue
        inline_request = big_request(size, model="objinline")
        payload = inline_request.SerializeToString()
        del inline_request
        inline_reps = max(3, min(args.object_reps, int(args.object_budget * 16 / max(mib, 1))))
        inline_lat = await _latencies(client, payload, "objinline", inline_reps)
        out[f"inline_{mib}"] = {"p50_ms": statistics.median(inline_lat), "n": inline_reps}
        del payload
    return out


async def _latencies(client, payload: bytes, capability: str, reps: int) -> list[float]:
    if isinstance(client, GrpcClient):
        call = client.unary(payload, capability)
    else:
        call = client.unary(await client.conn(), payload, capability)
    raw = await call()  # warm-up, and check the answer
    response = pb.ModelInferResponse.FromString(raw)
    assert response.outputs and response.outputs[0].name == "size", response
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t0) * 1e3)
    if isinstance(client, HttpClient):
        await client.close()
    return samples


WORKLOADS = {"W1": workload_w1, "W2": workload_w2, "W3": workload_w3, "OBJ": workload_obj}
