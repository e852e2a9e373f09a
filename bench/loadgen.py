"""The load generator: one process, one core (the runner pins it to CPU 1), one event loop.

Two clients, each used for every system of its protocol so a ratio never
compares two generators:

* ``grpc``: ``grpc.aio``, one channel, N tasks, raw-bytes method handles
  (requests serialised once, responses not parsed on the hot path);
* ``http``: a small asyncio HTTP/1.1 client, one keep-alive connection per
  concurrent task, protobuf bodies, chunked/SSE responses read as bytes
  (httpx costs several times more CPU per request on one core).

Run by ``bench/run.py``; by hand::

    python bench/loadgen.py --proto grpc --target 127.0.0.1:50051 --workloads W1,W2,W3 --duration 3

It prints one JSON object: per cell the median of ``--runs`` runs and every
run's figure, the client's CPU use and core 0's busy share in the window
(a client near 100% CPU means the figure is the client's limit, not the server's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from anyserve._proto import grpc_predict_v2_pb2 as pb

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
MIB = 1024 * 1024
SMALL_BYTES = 64
TOKENS = 256
MAX_MESSAGE = 512 * MIB


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


# -- measuring --------------------------------------------------------------------


def _cpu0() -> tuple[int, int]:
    """(busy, total) jiffies of CPU 0, the core the system under test is pinned to."""
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("cpu0 "):
                fields = [int(x) for x in line.split()[1:]]
                idle = fields[3] + fields[4]
                return sum(fields) - idle, sum(fields)
    return 0, 0


#: role -> pid of the processes of the system under test (``--server-pids``).
SERVER_PIDS: dict[str, int] = {}
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class Window:
    """Wall time, this process's CPU share, core 0's busy share and each server process's CPU over one run."""

    def __init__(self) -> None:
        self.cpu0 = _cpu0()
        self.servers = {role: _proc_cpu(pid) for role, pid in SERVER_PIDS.items()}
        self.cpu = time.process_time()
        self.start = time.perf_counter()

    def figures(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.start
        busy, total = _cpu0()
        return {
            "client_cpu": (time.process_time() - self.cpu) / wall,
            "server_core": (busy - self.cpu0[0]) / max(1, total - self.cpu0[1]),
            # CPU seconds per process over the whole window (the tail after the deadline included)
            "server_cpu_s": {role: _proc_cpu(pid) - self.servers[role] for role, pid in SERVER_PIDS.items()},
            "wall_s": wall,
        }


def pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Call = Callable[[], Awaitable[Any]]


async def closed_loop(call_factory: Callable[[int], Call], concurrency: int, seconds: float, latencies: bool) -> dict:
    """``concurrency`` tasks each calling back to back for ``seconds``; completions inside the window count."""
    calls = [call_factory(i) for i in range(concurrency)]
    done = total = 0
    lat: list[float] = []
    stop = 0.0

    async def task(call: Call) -> None:
        nonlocal done, total
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            await call()
            total += 1
            t1 = time.perf_counter()
            if t1 <= stop:
                done += 1
                if latencies:
                    lat.append(t1 - t0)

    window = Window()
    stop = window.start + seconds
    await asyncio.gather(*(task(c) for c in calls))
    out = {"rate": done / seconds, "ops_total": total, **window.figures()}
    if latencies:
        out["p50_ms"] = pct(lat, 0.5) * 1e3
        out["p99_ms"] = pct(lat, 0.99) * 1e3
        out["samples"] = len(lat)
    return out


async def stream_loop(
    open_stream: Callable[[int], Callable[[Callable[[], None]], Awaitable[int]]],
    concurrency: int,
    seconds: float,
) -> dict:
    """Tokens/s over ``seconds`` with ``concurrency`` back-to-back streams; TTFT per stream."""
    streams = [open_stream(i) for i in range(concurrency)]
    tokens = total = 0
    ttft: list[float] = []
    stop = 0.0

    async def task(run: Callable[[Callable[[], None]], Awaitable[int]]) -> None:
        nonlocal tokens
        first = 0.0

        def on_token() -> None:
            nonlocal tokens, total, first
            total += 1
            now = time.perf_counter()
            if not first:
                first = now
            if now <= stop:
                tokens += 1

        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            first = 0.0
            await run(on_token)
            if first and first <= stop:
                ttft.append(first - t0)

    window = Window()
    stop = window.start + seconds
    await asyncio.gather(*(task(s) for s in streams))
    return {
        "rate": tokens / seconds,
        "ops_total": total,
        "ttft_p50_ms": pct(ttft, 0.5) * 1e3,
        "ttft_p99_ms": pct(ttft, 0.99) * 1e3,
        "streams": len(ttft),
        **window.figures(),
    }


# -- gRPC client ------------------------------------------------------------------


class GrpcClient:
    def __init__(self, target: str) -> None:
        options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        self.channel = grpc.aio.insecure_channel(target, options=options)
        self.infer = self.channel.unary_unary(INFER)
        self.stream = self.channel.stream_stream(STREAM)

    async def ready(self, timeout: float = 30) -> None:
        await asyncio.wait_for(self.channel.channel_ready(), timeout)

    def unary(self, payload: bytes, capability: str) -> Call:
        metadata = (("x-capability-type", capability),)
        infer = self.infer

        async def call() -> bytes:
            return await infer(payload, metadata=metadata)

        return call

    def unary_with(self, payload: bytes, metadata: tuple[tuple[str, str], ...]) -> Call:
        infer = self.infer

        async def call() -> bytes:
            return await infer(payload, metadata=metadata)

        return call

    def streamer(self, payload: bytes) -> Callable[[Callable[[], None]], Awaitable[int]]:
        metadata = (("x-capability-type", "tokens"),)
        stream = self.stream

        async def run(on_token: Callable[[], None]) -> int:
            call = stream(iter((payload,)), metadata=metadata)
            n = 0
            pending = None
            async for message in call:
                # Every message but the run's closing marker is a token.
                if pending is not None:
                    on_token()
                    n += 1
                pending = message
            return n

        return run

    async def check_stream(self, payload: bytes) -> int:
        """Parse one whole stream: the count of text tokens, with the marker checked."""
        call = self.stream(iter((payload,)), metadata=(("x-capability-type", "tokens"),))
        messages = [pb.ModelStreamInferResponse.FromString(m) async for m in call]
        assert messages and not any(m.error_message for m in messages), messages[-1:]
        assert messages[-1].infer_response.parameters["triton_final_response"].bool_param, "no final marker"
        return sum(1 for m in messages if m.infer_response.outputs)

    async def close(self) -> None:
        await self.channel.close()


# -- HTTP/1.1 client ----------------------------------------------------------------


class HttpError(Exception):
    pass


class HttpConn:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=4 * MIB)

    def head(self, path: str, body_len: int, extra: dict[str, str]) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {body_len}"]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _response_head(self) -> tuple[int, int | None]:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.index(b"\r\n", i + 2)
            length = int(lower[i + 17 : j])
        elif b"transfer-encoding: chunked" not in lower:
            raise HttpError(f"neither Content-Length nor chunked: {head!r}")
        return status, length

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(head)
        self.writer.write(body)
        if len(body) > 256 * 1024:
            await self.writer.drain()
        status, length = await self._response_head()
        if length is not None:
            return status, await self.reader.readexactly(length)
        chunks = []
        async for chunk in self._chunks():
            chunks.append(chunk)
        return status, b"".join(chunks)

    async def _chunks(self):
        reader = self.reader
        assert reader is not None
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]

    async def sse(self, head: bytes, body: bytes, on_token: Callable[[], None]) -> int:
        """POST and read an SSE answer: ``on_token`` per ``data:`` event, until ``event: end``."""
        assert self.writer is not None
        self.writer.write(head)
        self.writer.write(body)
        status, length = await self._response_head()
        if status != 200:
            data = await self.reader.readexactly(length) if length is not None else b""  # type: ignore[union-attr]
            raise HttpError(f"HTTP {status}: {data[:300]!r}")
        buffer = b""
        n = 0
        ended = False
        async for chunk in self._chunks():
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if event.startswith(b"data: "):
                    on_token()
                    n += 1
                elif event.startswith(b"event: end"):
                    ended = True
                elif event.startswith(b"event: error"):
                    raise HttpError(event.decode(errors="replace"))
        if not ended:
            raise HttpError("stream ended without 'event: end'")
        return n

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class HttpClient:
    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.host, self.port = host, int(port)
        self.conns: list[HttpConn] = []

    async def ready(self, timeout: float = 30) -> None:
        pass

    async def conn(self) -> HttpConn:
        conn = HttpConn(self.host, self.port)
        await conn.connect()
        self.conns.append(conn)
        return conn

    async def pool(self, n: int) -> list[HttpConn]:
        return [await self.conn() for _ in range(n)]

    @staticmethod
    def headers(capability: str) -> dict[str, str]:
        return {"Content-Type": "application/x-protobuf", "X-Capability-Type": capability}

    def unary(self, conn: HttpConn, payload: bytes, capability: str, path: str = "/infer") -> Call:
        head = conn.head(path, len(payload), self.headers(capability))

        async def call() -> bytes:
            status, body = await conn.request(head, payload)
            if status != 200:
                raise HttpError(f"HTTP {status}: {body[:300]!r}")
            return body

        return call

    def streamer(self, conn: HttpConn, payload: bytes) -> Callable[[Callable[[], None]], Awaitable[int]]:
        head = conn.head("/infer/stream", len(payload), self.headers("tokens"))

        async def run(on_token: Callable[[], None]) -> int:
            return await conn.sse(head, payload, on_token)

        return run

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()
        self.conns = []


# -- workloads -----------------------------------------------------------------------


async def repeat(runs: int, measure: Callable[[], Awaitable[dict]]) -> dict:
    """Median by ``rate`` of ``runs`` runs (its other figures come from that same run)."""
    results = [await measure() for _ in range(runs)]
    ordered = sorted(results, key=lambda r: r["rate"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["runs"] = [round(r["rate"], 1) for r in results]
    if len(results) > 1 and statistics.mean(median["runs"]) > 0:
        median["spread"] = (max(median["runs"]) - min(median["runs"])) / statistics.median(median["runs"])
    return median


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


async def main(args) -> dict:
    client = GrpcClient(args.target) if args.proto == "grpc" else HttpClient(args.target)
    await client.ready()
    results: dict[str, Any] = {"pid": os.getpid(), "cpus": sorted(os.sched_getaffinity(0))}
    try:
        for name in args.workloads:
            t0 = time.perf_counter()
            try:
                results[name] = await WORKLOADS[name](client, args)
            except Exception as exc:  # one failing workload does not lose the others
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  {name} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    finally:
        await client.close()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", choices=("grpc", "http"), required=True)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--workloads", default="W1,W2,W3", help="comma-separated: W1,W2,W3,OBJ")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per cell")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per cell (median reported)")
    parser.add_argument("--sync-variant", action="store_true", help="also W1@64 with the thread-pool echo")
    parser.add_argument("--store", help="object store directory (OBJ)")
    parser.add_argument("--object-sizes", default="1,64,256", help="MiB, comma-separated (OBJ)")
    parser.add_argument(
        "--object-reps", type=int, default=30, help="by-reference calls per size; inline: at most (OBJ)"
    )
    parser.add_argument("--object-budget", type=float, default=1.0, help="scales the repetitions of big sizes")
    parser.add_argument("--inline-max-mib", type=int, default=1 << 20, help="skip inline objects above this (OBJ)")
    parser.add_argument("--server-pids", default="", help="role:pid,... whose CPU time each window records")
    parser.add_argument("--out", type=Path, help="write the JSON here as well")
    args = parser.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    args.object_sizes = [int(s) for s in args.object_sizes.split(",") if s.strip()]
    for item in filter(None, args.server_pids.split(",")):
        role, _, pid = item.rpartition(":")
        SERVER_PIDS[role] = int(pid)
    return args


if __name__ == "__main__":
    arguments = parse_args()
    data = asyncio.run(main(arguments))
    text = json.dumps(data, indent=1, default=float)
    if arguments.out:
        arguments.out.write_text(text)
    print(text)
