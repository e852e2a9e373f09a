"""Entry point of a worker process: ``python -m anyserve.replica.worker_main SPEC``.

``SPEC`` is the JSON the supervisor writes: the resolved settings, the app
reference, the worker id and the address to serve on. The worker loads the
plugins again (every process does), serves until SIGTERM, and exits by itself
if its agent disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import traceback
from typing import Any

from anyserve import event_loop, gc_policy, tracing
from anyserve.errors import ConfigError
from anyserve.replica.assembly import Assembly

log = logging.getLogger("anyserve.worker")


async def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    log.warning("agent %d went away; worker exiting", parent)


async def serve(spec: dict[str, Any]) -> None:
    assembly = Assembly.from_spec(spec)
    tracing.setup(assembly.settings.tracing, tracing.WORKER_SERVICE)  # the agent's settings
    host, cleanup = await assembly.start_host(spec["worker_id"], spec.get("worker_class"))
    gc_policy.settle()  # the handlers (a model's graph among them) are loaded: they live as long as the worker
    serving = asyncio.create_task(assembly.transport.serve(spec["address"], host))
    watchdog = asyncio.create_task(_watch_parent(spec["parent_pid"]))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, serving.cancel)
    try:
        await asyncio.wait({serving, watchdog}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (serving, watchdog):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        host.close()
        await cleanup()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    logging.basicConfig(
        level=spec.get("log_level", "WARNING").upper(),
        format=f"%(asctime)s %(levelname)s [worker {spec['worker_id']} pid {os.getpid()}] %(name)s: %(message)s",
    )
    try:
        event_loop.run(serve(spec))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. a worker class's on_start raised: say which and why
        traceback.print_exc()
        where = f"worker class {spec['worker_class']}" if spec.get("worker_class") else "worker"
        print(f"error: {where} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    tracing.shutdown()
    # Everything the worker owns is closed and on_cleanup() has run: skip the interpreter's teardown,
    # which for a process that imported torch takes seconds and delays the next model's start.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
