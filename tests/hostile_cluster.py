"""The one-replica cluster the hostile-input tests (tests/faults) walk, and what they share.

One router (HTTP and ``--grpc-port``) and one replica (unix workers, router
link on) that registered itself, as a user starts them; at its start two
link connections are opened that never finish a hello, which the link's
handshake timeout must close (checked by test_hostile_link.py).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from processes import Process, free_port, run_anyserve
from router_http import wait_registered

from anyserve.protocol import messages as pb

#: Every refusal must come within this (a busy 2-core machine; the router's ticks are at most a second).
QUICK = 5.0
#: The router's body timeout here: a body announced and not sent is 408 this soon, not at the default 60 s.
BODY_TIMEOUT = 1.0
CONFIG = f"""
[router]
body_timeout_seconds = {BODY_TIMEOUT}
body_min_bytes_per_second = 1024
"""
ECHO_JSON = b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [7]}]}'


@dataclass
class Ports:
    """The four public ports of a one-replica cluster, and the silent link connections opened at its start."""

    router_url: str
    router_grpc: str
    replica_grpc: str
    link: str
    #: (opened at, socket): a link connection that never says hello, one that sends half a frame header.
    silent_links: list[tuple[float, socket.socket]] = field(default_factory=list)


def start_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    """Start the cluster, yield its ports, and stop it (a generator for a fixture)."""
    config = tmp_path_factory.mktemp("hostile") / "anyserve.toml"
    config.write_text(CONFIG)
    started: list[Process] = []
    silent: list[tuple[float, socket.socket]] = []
    try:
        port, grpc_port, replica_port = free_port(), free_port(), free_port()
        router = run_anyserve("router", "--port", str(port), "--grpc-port", str(grpc_port), "--config", str(config))
        started.append(router)
        router.wait_for(" ready at ")
        url = f"http://127.0.0.1:{port}"
        replica = run_anyserve(
            "start", "--app", "echo_app:app", "--port", str(replica_port), "--transport", "unix",
            "--api-server", url, "--replica-id", "hostile-1",
        )  # fmt: skip
        started.append(replica)
        link = re.search(r"router link tcp://(\S+)\)", replica.wait_for(" ready at "))
        assert link is not None, "the replica serves no router link"
        wait_registered(url, 1)
        # The link's handshake timeout is fixed at 10 s: these run alongside the other tests, checked by the last.
        for first_bytes in (b"", b"\x00\x00"):
            sock = socket.create_connection(host_port(link.group(1)), timeout=QUICK)
            sock.sendall(first_bytes)
            silent.append((time.monotonic(), sock))
        yield Ports(url, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{replica_port}", link.group(1), silent)
    finally:
        for _, sock in silent:
            sock.close()
        for process in started:
            process.kill_group()


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def shape_bomb() -> pb.ModelInferRequest:
    bomb = pb.ModelInferRequest(model_name="add", id="bomb")
    bomb.inputs.add(name="a", datatype="INT64", shape=[10_000_000, 0])
    bomb.inputs.add(name="b", datatype="INT64", shape=[0])
    return bomb
