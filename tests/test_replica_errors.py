"""What a replica says when things go wrong, and what it keeps for its log.

A handler's exception reaches the caller as INTERNAL with its type and
message, and the replica's log gets the traceback once, with the request
id. A worker that dies mid-request costs the caller a plain UNAVAILABLE:
the worker's pid and socket path are for the log, not for the caller.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time

import grpc
import pytest
from kserve import output, request


def test_a_handler_exception_is_logged_once_with_traceback_and_request_id(start_replica, transport, wire_for):
    replica = start_replica(transport=transport)
    wire = wire_for(replica.endpoint)
    with pytest.raises(grpc.RpcError) as info:
        wire.stub.ModelInfer(request("boom"), metadata=[("x-request-id", "req-boom-1")], timeout=30)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "ValueError: the handler failed on purpose"
    log = replica.process.output(settle=0.5)
    assert log.count("handler boom failed (request req-boom-1): ValueError: the handler failed on purpose") == 1
    assert "Traceback (most recent call last)" in log and 'raise ValueError("the handler failed on purpose")' in log


def test_a_worker_dying_mid_request_answers_unavailable_without_pid_or_socket(start_replica, wire_for):
    replica = start_replica(transport="unix", workers=1)
    wire = wire_for(replica.endpoint)
    worker_pid = output(wire.infer(request("echo")), "pid")[0]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(
            wire.stub.ModelInfer, request("slow", seconds=[30.0]), metadata=[("x-request-id", "req-slow-1")], timeout=60
        )
        time.sleep(0.5)
        os.kill(worker_pid, signal.SIGKILL)
        with pytest.raises(grpc.RpcError) as info:
            call.result(timeout=30)
    details = info.value.details()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "stopped before it answered (request req-slow-1)" in details
    assert str(worker_pid) not in details and ".sock" not in details and "/tmp" not in details
    log = replica.process.output(settle=0.5)
    assert re.search(rf"worker \S+ died during request req-slow-1: .*{worker_pid}", log), log
