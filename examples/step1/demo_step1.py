"""The step-1 scenario in one command: a router and two nodes on one machine, then four checks.

    python demo_step1.py [--load-seconds 1.0] [--store DIR] [--router-port P] [--port-a P] [--port-b P]

It starts ``anyserve router`` and two replicas (``nodes:node_a`` offering
``{type: small}``, ``nodes:node_b`` offering ``{type: large}``) as
subprocesses, each in its own process group, sharing one object store
directory; then it shows

1. a local hit: ``small`` sent to node A is served there, fast;
2. delegation: ``large`` sent to node A goes back to the router and on to node B;
3. an object reference: node B stores a result too big to send inline and
   answers with its reference; the demo reads the file from the shared directory;
4. switching: node B's worker pays the model-load cost only when the
   requested model changes.

It checks each step, prints ``step 1 demo passed`` (exit status 0) or what
failed (exit status 1), and stops every process it started on the way out,
Ctrl-C and SIGTERM included. Ports default to free ones (0); the fixed
ports step 1 was specified with are ``--router-port 8000 --port-a 50051
--port-b 50052``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from anyserve import AnyServeError, Client, ObjRef

HERE = Path(__file__).resolve().parent
READY = re.compile(r" ready at (\S+)")
START_TIMEOUT = 30.0  # seconds for a process to print its `ready at` line
STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL (an idle replica stops well within it)
SWITCH_SEQUENCE = ["llama-70b", "llama-70b", "qwen-72b", "qwen-72b", "llama-70b"]


class DemoFailed(Exception):
    """A step did not do what the scenario says it does."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)


def say(text: str = "") -> None:
    print(text, flush=True)


# -- processes -----------------------------------------------------------------


class Cluster:
    """The router and nodes this demo started; :meth:`stop` ends every process group."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> str:
        """Run ``anyserve ARGS`` in a new session; the address it is ready at."""
        log_path = self.logs / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "anyserve_cli", *args],
                cwd=HERE,  # `--app nodes:node_a` is found here
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() kills it and its workers
            )
        self.started.append((name, proc))
        say(f"[setup] $ anyserve {' '.join(args)}   ({name}, pid {proc.pid})")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            found = READY.search(log_path.read_text(errors="replace"))
            if found:
                return found.group(1)
            if proc.poll() is not None:
                raise DemoFailed(f"{name} exited with status {proc.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise DemoFailed(f"{name} not ready within {START_TIMEOUT:g}s:\n{log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM to every group (nodes first, so they deregister), SIGKILL to what is left."""
        for _, proc in reversed(self.started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for _, proc in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            # Whatever is left of the group (a worker, a process that ignored SIGTERM) goes now.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_GRACE)
        if self.started:
            say(f"[cleanup] stopped {', '.join(name for name, _ in reversed(self.started))}")
        self.started.clear()


def wait_registered(router: str, replica_ids: set[str], seconds: float = 15.0) -> None:
    """Replicas register just after printing `ready at`: wait until the router knows both."""
    deadline = time.monotonic() + seconds
    while True:
        known = {r["replica_id"] for r in httpx.get(f"{router}/registry", timeout=5).json()["replicas"]}
        if replica_ids <= known:
            return
        check(time.monotonic() < deadline, f"only {sorted(known)} of {sorted(replica_ids)} registered")
        time.sleep(0.1)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    result = call()
    return result, time.perf_counter() - began


# -- the scenario -----------------------------------------------------------------


def local_hit(node_a: str) -> None:
    say("\n1. local hit: small -> node A")
    with Client(node_a, timeout=30) as client:
        result, seconds = timed(lambda: client.infer("small", {"text": "hello from step one"}))
    check(result["served_by"] == ["node-a"], f"small was served by {result['served_by']}, not node-a")
    check("anyserve.delegated_from" not in result.parameters, "small should not have been delegated")
    say(f"[local-hit] served by node-a in {seconds:.3f}s: {result['text_output'][0]!r}")


def delegation(node_a: str, node_b: str) -> str:
    say("\n2. delegation: large -> node A (no such capability) -> router -> node B")
    prompt = {"text": "tell me a story"}
    with Client(node_a, timeout=60) as client:
        result, seconds = timed(lambda: client.infer("large", prompt))
    origin = result.parameters.get("anyserve.delegated_from")
    check(result["served_by"] == ["node-b"], f"large was served by {result['served_by']}, not node-b")
    check(origin == "node-a", f"expected delegated_from=node-a, got {origin!r}")
    loaded = result["switch_seconds"][0]
    say(
        f"[delegation] served by node-b, delegated_from={origin}, in {seconds:.2f}s "
        f"(of which {loaded:.2f}s: node B's first load of {result['model'][0]}): {result['text_output'][0]!r}"
    )
    # Once the model is loaded, the extra hop (node A -> router -> node B) is all the difference.
    with Client(node_a, timeout=60) as via_a, Client(node_b, timeout=60) as direct:
        _, delegated = timed(lambda: via_a.infer("large", prompt))
        _, straight = timed(lambda: direct.infer("large", prompt))
    say(f"[delegation] again, model loaded: via node A {delegated:.3f}s, straight to node B {straight:.3f}s")
    return result["model"][0]  # node B's current model from now on


def object_ref(node_b: str, store: Path) -> None:
    say("\n3. object ref: large 'make_huge_data' -> node B; the result stays in the shared store")
    with Client(node_b, timeout=60) as client:
        result = client.infer("large", {"text": "make_huge_data"})
    check("result_ref" in result, f"expected a result_ref output, got {sorted(result)}")
    ref, size, digest = result["result_ref"][0], result["size"][0], result["sha256"][0]
    check(isinstance(ref, ObjRef), f"result_ref should decode as an ObjRef, got {ref!r}")
    say(f"[object-ref] node B answered with a reference: {ref} ({size:,} bytes, sha256 {digest[:16]}...)")
    response_bytes = result.response.ByteSize()
    check(response_bytes < 1024, f"the response should carry only the reference, it holds {response_bytes} bytes")

    path = store / ref.key  # the fs backend keeps object <key> at <store>/<key>
    data = path.read_bytes()
    check(len(data) == size, f"{path} holds {len(data)} bytes, the answer said {size}")
    check(hashlib.sha256(data).hexdigest() == digest, f"{path} does not hold what node B wrote")
    say(f"[object-ref] client read {path}: {len(data):,} bytes, sha256 matches; response was {response_bytes} bytes")

    from anyserve_objects_fs import FileStore  # the store's own API: removes the file and its metadata

    FileStore(store).delete(ref)


def switching(node_b: str, current: str, load_seconds: float) -> None:
    say(f"\n4. switching: node B's worker keeps its current model ({current}); only a change costs a load")
    with Client(node_b, timeout=60) as client:
        for model in SWITCH_SEQUENCE:
            result, seconds = timed(
                lambda model=model: client.infer("large", {"text": "tell me a story"}, parameters={"model": model})
            )
            cost = result["switch_seconds"][0]
            changed = model != current
            say(
                f"[switch] {model:<10} {seconds:5.2f}s  load {cost:4.2f}s  "
                f"({'model changed' if changed else 'same model'})  {result['text_output'][0]}"
            )
            if changed:
                check(cost >= load_seconds * 0.9, f"switching to {model} cost only {cost}s")
            else:
                check(cost == 0.0, f"staying on {model} cost {cost}s")
            current = model


# -- main -----------------------------------------------------------------------


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`, so the cluster is stopped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-seconds", type=float, default=1.0, help="node B's model switching cost")
    parser.add_argument("--token-delay", type=float, default=0.01, help="node B's seconds per generated token")
    parser.add_argument("--store", type=Path, help="shared object store directory (default: a temporary one)")
    parser.add_argument("--router-port", type=int, default=0, help="router HTTP port (0: a free one)")
    parser.add_argument("--port-a", type=int, default=0, help="node A gRPC port (0: a free one)")
    parser.add_argument("--port-b", type=int, default=0, help="node B gRPC port (0: a free one)")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, _terminate)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _terminate)

    workdir = Path(tempfile.mkdtemp(prefix="anyserve-step1-"))
    store = (args.store or workdir / "objects").resolve()
    store.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "LOAD_SECONDS": str(args.load_seconds),
        "TOKEN_DELAY": str(args.token_delay),
    }
    cluster = Cluster(logs, env)
    say(f"anyserve step 1: router + node A {{type: small}} + node B {{type: large}}, load cost {args.load_seconds}s")
    say(f"[setup] shared object store file://{store}; logs in {logs}")
    try:
        router = cluster.start("router", "router", "--port", str(args.router_port))
        say(f"[setup] router ready at {router}")
        common = ["--api-server", router, "--object-store", f"file://{store}"]
        node_a = cluster.start(
            "node-a", "start", "--app", "nodes:node_a", "--port", str(args.port_a), "--replica-id", "node-a", *common
        )
        say(f"[setup] node-a ready at {node_a}, offering {{type: small}}")
        node_b = cluster.start(
            "node-b", "start", "--app", "nodes:node_b", "--port", str(args.port_b), "--replica-id", "node-b", *common
        )
        say(f"[setup] node-b ready at {node_b}, offering {{type: large}}")
        wait_registered(router, {"node-a", "node-b"})
        say("[setup] both nodes registered with the router")

        local_hit(node_a)
        model = delegation(node_a, node_b)
        object_ref(node_b, store)  # the default model again: no load
        switching(node_b, model, args.load_seconds)
        say("\nstep 1 demo passed: local hit, delegation, object ref, switching cost only on a model change")
        return 0
    except (DemoFailed, AnyServeError, httpx.HTTPError) as failure:  # a check, a call or the router failed
        say(f"\nstep 1 demo FAILED: {failure}")
        return 1
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # logs, and the store unless --store named one
        say(f"[cleanup] removed {workdir}")


if __name__ == "__main__":
    sys.exit(main())
