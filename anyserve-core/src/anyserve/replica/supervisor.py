"""Starts the workers, connects the pool to them, and restarts those that die.

Workers are processes (``python -m anyserve.replica.worker_main``) unless the
transport is in-process, in which case one worker is served inside the
agent's event loop. A worker that exits unexpectedly is removed from the
pool at once (its in-flight requests fail with UNAVAILABLE through the
transport) and started again with exponential back-off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import signal
import sys
from dataclasses import dataclass, field

from anyserve.errors import AnyServeError
from anyserve.replica.assembly import Assembly
from anyserve.replica.pool import WorkerPool, WorkerSlot

log = logging.getLogger("anyserve.supervisor")

START_TIMEOUT = 60.0
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 10.0
STABLE_AFTER = 30.0


class WorkerStartError(AnyServeError):
    """A worker process exited or stayed silent before its handshake."""

    code = "UNAVAILABLE"


@dataclass
class WorkerProcess:
    id: str
    address: str
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    stderr_tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    restarts: int = 0


class Supervisor:
    def __init__(self, assembly: Assembly, pool: WorkerPool, run_dir: str, count: int) -> None:
        self.assembly = assembly
        self.pool = pool
        self.run_dir = run_dir
        self.in_process = assembly.transport_spec.in_process
        self.count = 1 if self.in_process else count
        self.workers: dict[str, WorkerProcess] = {}
        self._stopping = False
        self._watchers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start every worker and wait for all handshakes; raise if one fails."""
        if self.in_process and self.assembly.settings.replica.workers > 1:
            log.warning("transport %r runs handlers in the agent: --workers is ignored", self.assembly.transport.name)
        ids = [f"w{i}" for i in range(self.count)]
        for wid in ids:
            self.workers[wid] = WorkerProcess(wid, self.assembly.transport.address(self.run_dir, wid))
        await asyncio.gather(*(self._launch(self.workers[wid]) for wid in ids))
        for wid in ids:
            watcher = asyncio.create_task(self._watch(self.workers[wid]), name=f"watch-{wid}")
            self._watchers.add(watcher)

    async def _launch(self, worker: WorkerProcess) -> None:
        transport = self.assembly.transport
        if self.in_process:
            host = self.assembly.worker_host(worker.id)
            worker.task = asyncio.create_task(transport.serve(worker.address, host), name=f"serve-{worker.id}")
        else:
            spec = json.dumps(self.assembly.spec(worker.id, worker.address))
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "anyserve.replica.worker_main", spec,
                stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            relay = asyncio.create_task(self._relay_stderr(worker, worker.process))
            self._watchers.add(relay)
            relay.add_done_callback(self._watchers.discard)
        connect = asyncio.create_task(transport.connect(worker.address, timeout=START_TIMEOUT))
        exited = asyncio.create_task(self._exited(worker))
        done, _ = await asyncio.wait({connect, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if connect not in done:
            connect.cancel()
            detail = "\n".join(worker.stderr_tail) or "(no output)"
            raise WorkerStartError(f"worker {worker.id} exited before it was ready:\n{detail}")
        try:
            connection = connect.result()
        except AnyServeError as exc:
            raise WorkerStartError(f"worker {worker.id} did not become ready: {exc.message}") from None
        self.pool.add(WorkerSlot.from_connection(worker.id, connection))
        log.info("worker %s ready (pid %s)", worker.id, connection.hello.get("pid"))

    async def _exited(self, worker: WorkerProcess) -> None:
        if worker.process is not None:
            await worker.process.wait()
        elif worker.task is not None:
            # wait() rather than await: cancelling this waiter must not cancel the worker.
            await asyncio.wait({worker.task})

    @staticmethod
    async def _relay_stderr(worker: WorkerProcess, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            worker.stderr_tail.append(line)
            print(line, file=sys.stderr, flush=True)

    async def _watch(self, worker: WorkerProcess) -> None:
        delay = BACKOFF_FIRST
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            await self._exited(worker)
            if self._stopping:
                return
            code = worker.process.returncode if worker.process else None
            slot = self.pool.remove(worker.id)
            if slot is not None:
                await slot.connection.close()
            log.warning("worker %s exited (code %s); restarting in %.1fs", worker.id, code, delay)
            if loop.time() - started > STABLE_AFTER:
                delay = BACKOFF_FIRST
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            worker.restarts += 1
            try:
                await self._launch(worker)
            except WorkerStartError as exc:
                log.error("restart of worker %s failed: %s", worker.id, exc.message)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop every worker: SIGTERM, then SIGKILL after ``grace`` seconds."""
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        for slot in list(self.pool.slots.values()):
            await slot.connection.close()
        for worker in self.workers.values():
            if worker.task is not None:
                worker.task.cancel()
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers.values():
            if worker.process is None:
                continue
            try:
                await asyncio.wait_for(worker.process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
        for worker in self.workers.values():
            if worker.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker.task

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers.values() if w.process is not None]
