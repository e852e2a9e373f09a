"""Starts worker processes, connects the pool to them, and watches them.

Workers are processes (``python -m anyserve.replica.worker_main``) unless the
transport is in-process, in which case they are served inside the agent's
event loop. The app's plain handlers run in ``--workers`` always-on workers
that are restarted when they die: at once (after :data:`BACKOFF_FIRST`) when
the worker had served requests (a request killed it: the next ones should not
wait for it), with exponential back-off when it died before serving anything
(a broken start). Worker classes (``worker_class`` set) are started and
stopped by :mod:`anyserve.replica.lifecycle`, which is told when one exits
unexpectedly. Every worker is probed for liveness (:mod:`anyserve.replica.liveness`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from anyserve.errors import AnyServeError
from anyserve.replica.assembly import Assembly
from anyserve.replica.liveness import Liveness
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
    #: The worker class this process runs; None for the app's plain handlers.
    worker_class: str | None = None
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    stderr_tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    restarts: int = 0
    #: Set while the supervisor itself is stopping this worker.
    stopping: bool = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def last_output(self) -> str:
        return "\n".join(self.stderr_tail) or "(no output)"

    def why(self) -> str:
        """One line for the client: the worker's own ``error: ...`` line; the full output goes to the log.

        (A traceback names files and paths of the replica's machine, which an error answer must not.)
        """
        if self.task is not None and self.task.done() and not self.task.cancelled() and self.task.exception():
            exc = self.task.exception()  # an in-process worker: its exception is the answer
            return f"{type(exc).__name__}: {exc}"
        errors = [line for line in self.stderr_tail if line.startswith("error: ")]
        return errors[-1].removeprefix("error: ") if errors else "it printed no error (see the replica's log)"


#: Called when a worker-class process exits without being asked to: (worker, exit code).
ExitHandler = Callable[[WorkerProcess, int | None], None]


class Supervisor:
    def __init__(self, assembly: Assembly, pool: WorkerPool, run_dir: str, count: int) -> None:
        self.assembly = assembly
        self.pool = pool
        self.run_dir = run_dir
        self.in_process = assembly.transport_spec.in_process
        has_plain_handlers = bool(assembly.app.handlers)
        self.count = (1 if self.in_process else count) if has_plain_handlers else 0
        self.workers: dict[str, WorkerProcess] = {}
        self.on_class_exit: ExitHandler | None = None
        #: Environment of worker processes; None: the agent's own.
        self.env: dict[str, str] | None = None
        replica = assembly.settings.replica
        self.liveness = Liveness(pool, replica.liveness_interval_seconds, replica.liveness_timeout_seconds)
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def new_worker(self, worker_id: str, worker_class: str | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            worker_id, self.assembly.transport.address(self.run_dir, worker_id), worker_class=worker_class
        )
        self.workers[worker_id] = worker
        return worker

    async def start(self) -> None:
        """Start the always-on workers and wait for their handshakes; raise if one fails."""
        if self.in_process and self.assembly.settings.replica.workers > 1:
            log.warning("transport %r runs handlers in the agent: --workers is ignored", self.assembly.transport.name)
        workers = [self.new_worker(f"w{i}") for i in range(self.count)]
        await asyncio.gather(*(self.launch(w) for w in workers))
        if not self.in_process:  # an in-process worker shares the agent's loop: it cannot stop answering alone
            self.liveness.start()

    async def launch(self, worker: WorkerProcess, timeout: float = START_TIMEOUT) -> WorkerSlot:
        """Start ``worker`` and add it to the pool once its handshake arrived."""
        transport = self.assembly.transport
        worker.stopping = False
        if self.in_process:
            worker.task = asyncio.create_task(
                self.assembly.serve_in_process(worker.id, worker.address, worker.worker_class),
                name=f"serve-{worker.id}",
            )
        else:
            spec = json.dumps(self.assembly.spec(worker.id, worker.address, worker.worker_class))
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "anyserve.replica.worker_main", spec,
                stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=self.env,
            )  # fmt: skip
            relay = self._spawn(self._relay_stderr(worker, worker.process), f"stderr-{worker.id}")
        connect = asyncio.create_task(transport.connect(worker.address, timeout=timeout))
        exited = asyncio.create_task(self._exited(worker))
        done, _ = await asyncio.wait({connect, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if connect not in done:
            connect.cancel()
            if worker.process is not None:  # its last words (the error line) may still be in the pipe
                await asyncio.wait({relay}, timeout=1.0)
            if worker.task is not None and worker.task.done() and not worker.task.cancelled():
                log.warning("worker %s failed before it was ready", worker.id, exc_info=worker.task.exception())
            else:
                log.warning("worker %s exited before it was ready; its output:\n%s", worker.id, worker.last_output())
            raise WorkerStartError(f"worker {worker.id} exited before it was ready: {worker.why()}")
        try:
            connection = connect.result()
        except AnyServeError as exc:
            await self._terminate(worker, grace=1.0)
            raise WorkerStartError(f"worker {worker.id} did not become ready: {exc.message}") from None
        slot = WorkerSlot.from_connection(worker.id, connection, worker_class=worker.worker_class)
        self.pool.add(slot)
        self._spawn(self._watch(worker), f"watch-{worker.id}")
        log.info("worker %s ready (pid %s)", worker.id, connection.hello.get("pid"))
        return slot

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
        """Wait for one run of ``worker`` to end; restart plain workers, report classes."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._exited(worker)
        if self._stopping or worker.stopping:
            return
        code = worker.process.returncode if worker.process else None
        slot = self.pool.remove(worker.id)
        if slot is not None and worker.worker_class is None:
            self.pool.restarting[worker.id] = slot  # still this replica's: its requests wait for it
        if slot is not None:
            await slot.connection.close()
        if worker.worker_class is not None:
            log.warning("worker %s (%s) exited unexpectedly (code %s)", worker.id, worker.worker_class, code)
            if self.on_class_exit is not None:
                self.on_class_exit(worker, code)
            return
        if (slot is not None and slot.served) or loop.time() - started > STABLE_AFTER:
            worker.restarts = 0  # it worked: a request killed it, and the next ones should not wait
        delay = min(BACKOFF_FIRST * 2**worker.restarts, BACKOFF_MAX)
        log.warning("worker %s exited (code %s); restarting in %.1fs", worker.id, code, delay)
        while not self._stopping:
            await asyncio.sleep(delay)
            worker.restarts += 1
            try:
                await self.launch(worker)
                return
            except WorkerStartError as exc:
                log.error("restart of worker %s failed: %s", worker.id, exc.message)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _terminate(self, worker: WorkerProcess, grace: float) -> None:
        worker.stopping = True
        if worker.task is not None:
            worker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker.task
        if worker.process is None:
            return
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(worker.process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()

    async def stop_worker(self, worker: WorkerProcess, grace: float = 10.0) -> None:
        """Stop one worker on purpose (idle, eviction); its cleanup hook runs."""
        slot = self.pool.remove(worker.id)
        if slot is not None:
            await slot.connection.close()
        await self._terminate(worker, grace)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop every worker: SIGTERM, then SIGKILL after ``grace`` seconds."""
        self._stopping = True
        await self.liveness.stop()
        for slot in list(self.pool.slots.values()):
            await slot.connection.close()
        await asyncio.gather(*(self._terminate(w, grace) for w in self.workers.values()))
        for task in list(self._tasks):
            task.cancel()
