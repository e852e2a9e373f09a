"""Cold start of an on-demand worker, against the floor of importing the app.

    python bench/cold_start.py [--rounds 5]

Measures, on this machine:

* ``import floor``: ``python -c "import cold_app"`` wall time (a fresh
  interpreter importing the app module: the least any new worker process costs);
* ``cold start``: the first request to a worker class that is not running
  (the replica starts its process, runs ``on_start``, completes the handshake,
  serves) — the worker is idle-stopped between rounds;
* ``hot request``: a request to the same worker once it runs, and to an
  always-on handler, so the added latency of a worker class is visible.

Writes ``bench/results/cold_start.md``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from anyserve import Client

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def import_floor(rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import cold_app"], cwd=APPS, check=True)
        times.append(time.perf_counter() - began)
    return times


def latency(client: Client, capability: dict[str, str], n: int) -> list[float]:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        client.infer(capability["type"], capability=capability)
        times.append(time.perf_counter() - began)
    return times


def wait_cold(client: Client, endpoint: str, limit: float = 10.0) -> None:
    from anyserve.status_client import replica_status

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        classes = replica_status(endpoint, timeout=5)["worker_classes"]
        if classes[0]["state"] == "cold":
            return
        time.sleep(0.05)
    raise RuntimeError("the worker did not idle-stop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(APPS), os.environ.get("PYTHONPATH")]))}
    replica = subprocess.Popen(
        [sys.executable, "-m", "anyserve_cli", "start", "--app", "cold_app:app", "--transport", "unix",
         "--port", str(port)],
        cwd=APPS, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert replica.stdout is not None
        for line in replica.stdout:
            if " ready at " in line:
                break
        endpoint = f"127.0.0.1:{port}"
        floor = import_floor(args.rounds)
        cold: list[float] = []
        hot: list[float] = []
        with Client(endpoint, timeout=60) as client:
            always = latency(client, {"type": "always-on"}, 200)
            for _ in range(args.rounds):
                wait_cold(client, endpoint)
                cold += latency(client, {"type": "on-demand"}, 1)
                hot += latency(client, {"type": "on-demand"}, 50)
    finally:
        os.killpg(replica.pid, signal.SIGTERM)
        replica.wait(timeout=20)

    def ms(values: list[float]) -> str:
        return f"{1000 * statistics.median(values):.1f} ms"

    added_ms = 1000 * (statistics.median(hot) - statistics.median(always))
    table = "\n".join([
        "| measure | median |",
        "|---|---|",
        f"| `python -c 'import cold_app'` (floor) | {ms(floor)} |",
        f"| cold start: first request to a stopped worker class | {ms(cold)} |",
        f"| cold start / import floor | {statistics.median(cold) / statistics.median(floor):.2f}x |",
        f"| hot request to the worker class | {ms(hot)} |",
        f"| hot request to an always-on handler | {ms(always)} |",
        f"| added latency of a worker class when hot | {added_ms:+.2f} ms |",
    ])  # fmt: skip
    print(table)
    out = HERE / "results" / "cold_start.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(f"# Cold start ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, {args.rounds} rounds)\n\n"
                   f"{table}\n")  # fmt: skip


if __name__ == "__main__":
    main()
