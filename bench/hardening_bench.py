"""What the hardening costs the router: W1@64 before it, now, with API keys, and with TLS, in one run.

    .venv/bin/python bench/hardening_bench.py                 # ~6 min (+ a one-time build of the "before" code)
    .venv/bin/python bench/hardening_bench.py --rounds 1 --runs 1 --duration 2   # a quick look

The same router set-up as ``bench/run.py``'s ``router`` system (router ->
agent -> 1 worker over unix, every process pinned to CPU 0, the load
generator on CPU 1), and its W1 workload (small protobuf echo over HTTP,
64 connections), for:

* before: the code at ``--base`` (default: the last commit before
  authentication, limits and deadlines), built once into
  ``bench/.cache/base-<commit>/`` (its own virtual environment);
* now: this tree, default settings (the control plane authenticated; body,
  header, connection and registration limits; deadlines);
* now + API keys: the same with ``$ANYSERVE_API_KEYS`` set, every request
  carrying its key;
* now + TLS: the same with ``[tls]`` on every hop (a CA made by trustme),
  the load generator speaking HTTPS.

Rounds alternate the systems' order. Reported: requests/s (median of the
runs of each round, then the mean over rounds) and the ratio to *before*;
the target is *now* and *now + API keys* at >= 0.97x. Results go to
bench/results/hardening-<date>-<host>.md and hardening-latest.md (+ .json).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import ssl
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

import instructions
from processes import CLIENT_CPU, HERE, ROOT, SERVER_CPU, Managed, Processes, background_load, log
from systems import anyserve_config, endpoint_of, wait_routable

RESULTS = HERE / "results"
#: The last commit before the control plane was authenticated and the router bounded.
DEFAULT_BASE = "fa05040"
KEY = "sk-bench-0123456789abcdef"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", default=DEFAULT_BASE, help=f"the commit measured as 'before' (default {DEFAULT_BASE})")
    p.add_argument("--rounds", type=int, default=2, help="rounds, the order reversed every other one (default 2)")
    p.add_argument("--runs", type=int, default=3, help="measured runs per round (median taken; default 3)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run (default 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per round (default 1)")
    p.add_argument("--out", type=Path, help="write the report here instead of bench/results")
    p.add_argument("--skip-tls", action="store_true", help="leave out the TLS row")
    p.add_argument(
        "--instructions", type=int, default=2000, metavar="N",
        help="also count instructions per request under callgrind over N requests (default 2000; 0: skip)",
    )  # fmt: skip
    return p.parse_args(argv)


# -- the "before" code, built once ---------------------------------------------------------------


def base_python(rev: str) -> Path:
    """A virtual environment with the distributions as they were at ``rev`` (built on first use)."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = HERE / ".cache" / f"base-{sha}"
    python = folder / ".venv" / "bin" / "python"
    if (folder / ".built").exists():
        return python
    log(f"hardening_bench: building the code at {sha} into {folder} (once) ...")
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(folder / ".venv")
    dists = [
        line.split(maxsplit=1)[1].split("[")[0]
        for line in (folder / "requirements-dev.txt").read_text().splitlines()
        if line.startswith("-e ")
    ]
    cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for dist in dists:
        cmd += ["-e", str(folder / dist)]
    subprocess.run(cmd, check=True, cwd=folder)
    (folder / ".built").write_text(sha + "\n")
    return python


# -- one system ------------------------------------------------------------------------------------


def tls_files(work: Path) -> dict[str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    cert.private_key_pem.write_to_path(str(work / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    return {
        "ANYSERVE_TLS_CERT_FILE": str(work / "cert.pem"),
        "ANYSERVE_TLS_KEY_FILE": str(work / "key.pem"),
        "ANYSERVE_TLS_CA_FILE": str(work / "ca.pem"),
    }


def server_pids(router: Managed, replica: Managed) -> dict[str, int]:
    """The router's, the agent's and its worker's pids: the load generator records each one's CPU per run."""
    children = subprocess.run(["pgrep", "-P", str(replica.proc.pid)], capture_output=True, text=True).stdout.split()
    pids = {"router": router.proc.pid, "agent": replica.proc.pid}
    if children:
        pids["worker"] = int(children[0])
    return pids


def measure(
    procs: Processes, name: str, python: Path, env: dict[str, str], loadgen_extra: list[str], args, store: Path
) -> dict[str, Any]:
    """Start router + replica with ``python``, run W1 against it, stop them; the W1@64 cell."""
    config = anyserve_config(procs.work, name.replace(" ", "-").replace("+", ""), store)
    scheme = "https" if "ANYSERVE_TLS_CERT_FILE" in env else "http"
    started: list[Managed] = []
    try:
        router = procs.start(
            f"{name}-router", [str(python), "-m", "anyserve_cli", "router", "--port", "0", "--config", str(config)],
            SERVER_CPU, env=env,
        )  # fmt: skip
        started.append(router)
        url = f"{scheme}://" + endpoint_of(router.wait_for(" ready at ")).removeprefix("https://")
        replica = procs.start(
            f"{name}-replica",
            [str(python), "-m", "anyserve_cli", "start", "--app", "bench_app:app", "--port", "0", "--transport", "unix",
             "--workers", "1", "--config", str(config), "--api-server", url, "--replica-id", "bench"],
            SERVER_CPU, env=env,
        )  # fmt: skip
        started.append(replica)
        replica.wait_for(" ready at ")
        cafile = env.get("ANYSERVE_TLS_CA_FILE")
        wait_routable(
            url,
            headers={"X-Api-Key": KEY} if "ANYSERVE_API_KEYS" in env else {},
            context=ssl.create_default_context(cafile=cafile) if cafile else None,
        )
        out = procs.work / f"loadgen-{name.replace(' ', '-')}.json"
        cmd = [sys.executable, str(HERE / "loadgen.py"), "--proto", "http", "--target", url.split("://", 1)[1]]
        cmd += ["--workloads", "W1", "--duration", str(args.duration), "--warmup", str(args.warmup)]
        cmd += ["--runs", str(args.runs), "--out", str(out), *loadgen_extra]
        cmd += ["--server-pids", ",".join(f"{role}:{pid}" for role, pid in server_pids(router, replica).items())]
        gen = procs.start(f"{name}-loadgen", cmd, CLIENT_CPU)
        started.append(gen)
        gen.proc.wait(timeout=120 + 4 * args.runs * (args.duration + args.warmup))
        if gen.proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"the load generator failed for {name}:\n{gen.tail()}")
        result = json.loads(out.read_text())["W1"]
        if "error" in result:
            raise RuntimeError(f"{name}: {result['error']}")
        return result["c64"]
    finally:
        for managed in started:
            procs.stop(managed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now()
    base = base_python(args.base)
    work = Path(tempfile.mkdtemp(prefix="hardening-bench-"))
    procs = Processes(work)
    atexit.register(procs.stop_all)
    store = work / "objects"
    store.mkdir()
    state = {"ANYSERVE_STATE_DIR": str(work / "state")}
    now = Path(sys.executable)
    systems: list[tuple[str, Path, dict[str, str], list[str]]] = [
        ("before", base, {}, []),
        ("now", now, state, []),
        ("now + API keys", now, {**state, "ANYSERVE_API_KEYS": KEY}, ["--header", f"X-Api-Key: {KEY}"]),
    ]
    if not args.skip_tls:
        tls = tls_files(work)
        systems.append(("now + TLS", now, {**state, **tls}, ["--tls-ca", tls["ANYSERVE_TLS_CA_FILE"]]))
    rates: dict[str, list[float]] = {name: [] for name, *_ in systems}
    cells: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in systems}
    background: list[float] = []
    try:
        for round_no in range(args.rounds):
            order = systems if round_no % 2 == 0 else list(reversed(systems))
            for name, python, env, extra in order:
                background.append(background_load())
                log(f"hardening_bench: round {round_no + 1}: {name} ...")
                cell = measure(procs, name, python, env, extra, args, store)
                rates[name].append(cell["rate"])
                cells[name].append(cell)
                log(f"hardening_bench:   {cell['rate']:,.0f} req/s")
        counts: dict[str, dict[str, float]] = {}
        if args.instructions and instructions.available():
            for name, python, env, extra in systems[:3]:  # TLS: the counting client speaks plain HTTP
                log(f"hardening_bench: instructions per request: {name} ...")
                headers = dict(h.split(": ", 1) for h in extra[1::2])
                counts[name] = instructions.count(procs, name, python, env, headers, args.instructions, store)
        elif args.instructions:
            log("hardening_bench: valgrind is not installed; no instruction counts (apt-get install valgrind)")
    finally:
        procs.stop_all()
    text = report(args, started, rates, cells, background, counts)
    print(text)
    out = args.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = f"hardening-{started.strftime('%Y-%m-%d-%H%M')}-{platform.node()}"
    for name in (stem, "hardening-latest"):
        (out / f"{name}.md").write_text(text + "\n")
        (out / f"{name}.json").write_text(
            json.dumps({"rates": rates, "cells": cells, "instructions": counts}, indent=1, default=float) + "\n"
        )
    log(f"hardening_bench: wrote {out / stem}.md and {out / 'hardening-latest.md'}")
    return 0


def report(args, started: dt.datetime, rates, cells, background: list[float], counts) -> str:
    base = sum(rates["before"]) / len(rates["before"])
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    lines = [
        f"# What the hardening costs: router W1@64 — {started:%Y-%m-%d %H:%M} on {platform.node()}",
        "",
        f"`python bench/hardening_bench.py` at {commit.stdout.strip()}; *before* is {args.base}. Router -> agent -> "
        f"1 worker over unix, all on CPU {SERVER_CPU}; load generator on CPU {CLIENT_CPU}; small protobuf echo over "
        f"HTTP/1.1, 64 connections; {args.rounds} round(s) of {args.runs} run(s) x {args.duration:g} s, "
        "the order reversed every other round.",
        "",
        "| system | requests/s | vs before | per round | server core busy | CPU µs per request: router/agent/worker |",
        "|---|---:|---:|---|---:|---|",
    ]
    for name, values in rates.items():
        mean = sum(values) / len(values)
        busy = sum(c.get("server_core", 0) for c in cells[name]) / len(cells[name])
        lines.append(
            f"| {name} | {mean:,.0f} | {mean / base:.3f}x | {' / '.join(f'{v:,.0f}' for v in values)} | {busy:.0%} "
            f"| {cpu_per_request(cells[name])} |"
        )
    spread = max((max(v) - min(v)) / (sum(v) / len(v)) for v in rates.values() if len(v) > 1) if args.rounds > 1 else 0
    lines += [
        "",
        f"Largest round-to-round spread of one system: {spread:.1%}. Background load sampled before each system "
        f"(share of both cores busy with other processes): {', '.join(f'{b:.0%}' for b in background)}; "
        f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
    ]
    # The target is judged on instructions when they were counted: a 3% cost is inside the throughput's noise.
    if counts:
        lines += ["", *instruction_table(counts, args.instructions)]
        total = {name: sum(c.values()) for name, c in counts.items()}
        now, keys = total["before"] / total["now"], total["before"] / total["now + API keys"]
        basis = "instructions per request, before / now"
    else:
        now = sum(rates["now"]) / len(rates["now"]) / base
        keys = sum(rates["now + API keys"]) / len(rates["now + API keys"]) / base
        basis = "requests/s, now / before"
    lines += [
        "",
        f"| target ({basis}) | measured | |",
        "|---|---:|:---:|",
        f"| auth (TLS off) and limits cost ≤ 3%: *now* ≥ 0.97x *before* | {now:.3f}x | {_mark(now)} |",
        f"| with API keys too: *now + API keys* ≥ 0.97x *before* | {keys:.3f}x | {_mark(keys)} |",
    ]
    return "\n".join(lines)


def instruction_table(counts: dict[str, dict[str, float]], requests: int) -> list[str]:
    """Instructions per request by process (bench/instructions.py), and their sum against *before*'s."""
    before = sum(counts["before"].values())
    lines = [
        f"Instructions per request, counted by callgrind over {requests} W1 requests after 500 to warm up "
        "(the clock-driven background measured over as long again and subtracted; see bench/instructions.py):",
        "",
        "| system | router | agent | worker | all three | vs before |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, by_role in counts.items():
        total = sum(by_role.values())
        cells = " | ".join(f"{by_role[role] / 1000:,.1f}k" for role in instructions.ROLES)
        lines.append(f"| {name} | {cells} | {total / 1000:,.1f}k | {total / before:.3f}x |")
    return lines


def cpu_per_request(cells: list[dict[str, Any]]) -> str:
    """Each server process's CPU per request, over each round's median run (requests finished or not)."""
    spent: dict[str, float] = {}
    requests = 0
    for cell in cells:
        requests += cell.get("ops_total", 0)
        for role, seconds in (cell.get("server_cpu_s") or {}).items():
            spent[role] = spent.get(role, 0.0) + seconds
    if not requests or not spent:
        return "—"
    return " / ".join(f"{1e6 * spent.get(role, 0.0) / requests:.0f}" for role in ("router", "agent", "worker"))


def _mark(ratio: float) -> str:
    return "✅" if ratio >= 0.97 else "❌"


if __name__ == "__main__":
    sys.exit(main())
