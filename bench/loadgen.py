"""The load generator: one process, one core (the runner pins it to CPU 1), one event loop.

Two clients, each used for every system of its protocol so a ratio never
compares two generators:

* ``grpc``: ``grpc.aio``, one channel, N tasks, raw-bytes method handles
  (requests serialised once, responses not parsed on the hot path);
* ``http``: a small asyncio HTTP/1.1 client, one keep-alive connection per
  concurrent task, chunked/SSE responses read as bytes (httpx costs several
  times more CPU per request on one core). ``--body protobuf`` (default)
  sends serialised ModelInferRequests to ``/infer``; ``--body json`` sends
  what KServe REST clients send (``bench/loadgen_json.py``): KServe v2 JSON
  to ``/v2/models/echo/infer``, W2 also as the binary tensor extension.
  ``CHAT`` (``bench/loadgen_chat.py``, HTTP to a router) sends its own JSON bodies
  whatever ``--body`` says: OpenAI chat and the same handler over ``/infer/stream``.

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
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import loadgen_chat
import loadgen_json
from loadgen_clients import GrpcClient, HttpClient
from loadgen_measure import SERVER_PIDS
from loadgen_workloads import WORKLOADS


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.proto == "grpc":
        client: GrpcClient | HttpClient = GrpcClient(args.target)
    else:
        extra = dict(h.split(":", 1) for h in args.header)
        tls = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
        client = HttpClient(args.target, {k.strip(): v.strip() for k, v in extra.items()}, tls)
    await client.ready()
    results: dict[str, Any] = {"pid": os.getpid(), "cpus": sorted(os.sched_getaffinity(0)), "body": args.body}
    workloads = {**(loadgen_json.WORKLOADS if args.body == "json" else WORKLOADS), **loadgen_chat.WORKLOADS}
    try:
        for name in args.workloads:
            t0 = time.perf_counter()
            try:
                results[name] = await workloads[name](client, args)
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
    parser.add_argument(
        "--body",
        choices=("protobuf", "json"),
        default="protobuf",
        help="HTTP bodies: serialised protobuf, or KServe v2 JSON (W2 also as the binary extension)",
    )
    parser.add_argument("--workloads", default="W1,W2,W3", help="comma-separated: W1,W2,W3,OBJ,CHAT")
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
    parser.add_argument("--header", action="append", default=[], help="NAME:VALUE sent with every HTTP request")
    parser.add_argument("--tls-ca", help="HTTPS, trusting this CA (PEM)")
    parser.add_argument("--out", type=Path, help="write the JSON here as well")
    args = parser.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    args.object_sizes = [int(s) for s in args.object_sizes.split(",") if s.strip()]
    if "CHAT" in args.workloads and args.proto != "http":
        parser.error("CHAT needs --proto http (a router)")
    if args.body == "json":
        if args.proto != "http":
            parser.error("--body json needs --proto http")
        unknown = set(args.workloads) - set(loadgen_json.WORKLOADS) - set(loadgen_chat.WORKLOADS)
        if unknown:
            parser.error(f"--body json runs {', '.join(loadgen_json.WORKLOADS)}, not {', '.join(sorted(unknown))}")
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
