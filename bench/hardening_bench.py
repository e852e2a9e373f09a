"""What the hardening costs the router: W1@64 before it, now, with API keys, and with TLS, in one run.

    .venv/bin/python bench/hardening_bench.py                 # ~6 min (+ a one-time build of the "before" code)
    .venv/bin/python bench/hardening_bench.py --rounds 6 --instructions 0   # a quick look

The same router set-up as ``bench/run.py``'s ``router`` system (router ->
agent -> 1 worker over unix, every process pinned to CPU 0, the load on
CPU 1), and its W1 workload (small protobuf echo over HTTP, 64
connections), for:

* before: the code at ``--base`` (default: the last commit before
  authentication, limits and deadlines), built once into
  ``bench/.cache/base-<commit>/`` (its own virtual environment);
* before, collector tuned: the same, with the garbage collector set up as
  ``anyserve.gc_policy`` does it (applied from outside by
  ``site_hooks/sitecustomize.py``, as that tree predates the policy);
* now, Python's collector: this tree (the control plane authenticated;
  body, header, connection and registration limits; deadlines) without
  what *before* lacked and is not the hardening's: no metrics
  (``router.metrics = false``, ``metrics_port = -1``; their cost is
  bench/observability_bench.py's) and ``ANYSERVE_GC=default``;
* now: the same with the collector as it ships (tuned), against *before,
  collector tuned*: the hardening's cost, like for like;
* now + API keys: *now* with ``$ANYSERVE_API_KEYS`` set, every request
  carrying its key;
* now, defaults: this tree as it ships (metrics on, the collector tuned),
  against *before*;
* now + TLS: *now* with ``[tls]`` on every hop (a CA made by trustme),
  the load speaking HTTPS.

Why the collector is taken aside: with Python's defaults a router under
load runs a young collection every few requests, and its cost in time is
several times its share of instructions (it walks objects, missing the
caches), so a tree that allocates a little more per request pays for it
out of proportion; tuned, the collector hardly runs in either tree.

All systems run side by side and the load visits them in turns
(bench/interleaved.py): requests/s of each turn, and the median over the
rounds of each system's ratio to its reference in the same round. Then,
with valgrind installed, instructions per request (bench/instructions.py).
The target is *now* and *now + API keys* at >= 0.97x *before, collector
tuned*. Results go
to bench/results/hardening-<date>-<host>.md and hardening-latest.md (+ .json).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import instructions
import interleaved
import results_files
from processes import CLIENT_CPU, HERE, ROOT, SERVER_CPU, Managed, Processes, background_load, log
from systems import anyserve_config, endpoint_of, wait_routable

#: The last commit before the control plane was authenticated and the router bounded.
DEFAULT_BASE = "fa05040"
KEY = "sk-bench-0123456789abcdef"
#: What *before* did not have and is not the hardening's: metrics (their cost is bench/observability_bench.py's).
NO_METRICS = {"ANYSERVE_ROUTER_METRICS": "false", "ANYSERVE_METRICS_PORT": "-1"}
BEFORE, BEFORE_TUNED = "before", "before, collector tuned"
#: The systems whose ratio to their reference is the target.
TARGETS = (("now", "auth (TLS off) and limits cost ≤ 3%"), ("now + API keys", "with API keys too"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", default=DEFAULT_BASE, help=f"the commit measured as 'before' (default {DEFAULT_BASE})")
    p.add_argument(
        "--now", metavar="REV", help="measure this commit as 'now' (built like --base) instead of the working tree"
    )
    p.add_argument("--rounds", type=int, default=30, help="rounds of turns, the order reversed every other one (30)")
    p.add_argument("--slot", type=float, default=1.0, help="seconds of each system's turn (default 1)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per system (default 2)")
    p.add_argument("--out", type=Path, help="write the report here instead of bench/results")
    p.add_argument("--skip-tls", action="store_true", help="leave out the TLS row")
    p.add_argument(
        "--instructions", type=int, default=2000, metavar="N",
        help="also count instructions per request under callgrind over N requests (default 2000; 0: skip)",
    )  # fmt: skip
    return p.parse_args(argv)


# -- the "before" code, built once ---------------------------------------------------------------


def tree_python(rev: str) -> Path:
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


def start_system(procs: Processes, name: str, python: Path, env: dict[str, str], store: Path) -> interleaved.Target:
    """Start router + replica with ``python`` and leave them running; the target the load is sent to."""
    config = anyserve_config(procs.work, name.replace(" ", "-").replace("+", ""), store)
    tls = "ANYSERVE_TLS_CERT_FILE" in env
    router = procs.start(
        f"{name}-router", [str(python), "-m", "anyserve_cli", "router", "--port", "0", "--config", str(config)],
        SERVER_CPU, env=env,
    )  # fmt: skip
    url = ("https://" if tls else "http://") + endpoint_of(router.wait_for(" ready at ")).removeprefix("https://")
    replica = procs.start(
        f"{name}-replica",
        [str(python), "-m", "anyserve_cli", "start", "--app", "bench_app:app", "--port", "0", "--transport", "unix",
         "--workers", "1", "--config", str(config), "--api-server", url, "--replica-id", "bench"],
        SERVER_CPU, env=env,
    )  # fmt: skip
    replica.wait_for(" ready at ")
    cafile = env.get("ANYSERVE_TLS_CA_FILE")
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    headers = {"X-Api-Key": KEY} if "ANYSERVE_API_KEYS" in env else {}
    wait_routable(url, headers=headers, context=context)
    return interleaved.Target(name, url.split("://", 1)[1], headers, context, pids=server_pids(router, replica))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now()
    base = tree_python(args.base)
    work = Path(tempfile.mkdtemp(prefix="hardening-bench-"))
    procs = Processes(work)
    atexit.register(procs.stop_all)
    store = work / "objects"
    store.mkdir()
    state = {"ANYSERVE_STATE_DIR": str(work / "state")}
    now = tree_python(args.now) if args.now else Path(sys.executable)
    # (name, python, environment, the system it is compared with)
    systems: list[tuple[str, Path, dict[str, str], str]] = [
        (BEFORE, base, {}, BEFORE),
        (BEFORE_TUNED, base, {"ANYSERVE_BENCH_GC": "tuned"}, BEFORE),
        ("now, Python's collector", now, {**state, **NO_METRICS, "ANYSERVE_GC": "default"}, BEFORE),
        ("now", now, {**state, **NO_METRICS}, BEFORE_TUNED),
        ("now + API keys", now, {**state, **NO_METRICS, "ANYSERVE_API_KEYS": KEY}, BEFORE_TUNED),
        ("now, defaults", now, state, BEFORE),
    ]
    if not args.skip_tls:
        systems.append(("now + TLS", now, {**state, **NO_METRICS, **tls_files(work)}, BEFORE_TUNED))
    references = {name: reference for name, _, _, reference in systems}
    # Every process gets site_hooks/ (Processes.start passes PYTHONPATH on); it acts only where asked.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(instructions.SITE), os.environ.get("PYTHONPATH")]))
    background = background_load()
    counts: dict[str, dict[str, float]] = {}
    try:
        log(f"hardening_bench: starting {len(systems)} systems side by side ...")
        targets = [start_system(procs, name, python, env, store) for name, python, env, _ in systems]
        log(f"hardening_bench: {args.rounds} rounds of {args.slot:g} s turns per system ...")
        interleaved.measure(targets, rounds=args.rounds, slot=args.slot, warmup=args.warmup)
        procs.stop_all()
        if args.instructions and instructions.available():
            for (name, python, env, _), target in zip(systems[:5], targets, strict=False):  # TLS: plain HTTP client
                log(f"hardening_bench: instructions per request: {name} ...")
                counts[name] = instructions.count(procs, name, python, env, target.headers, args.instructions, store)
        elif args.instructions:
            log("hardening_bench: valgrind is not installed; no instruction counts (apt-get install valgrind)")
    finally:
        procs.stop_all()
    text = report(args, started, targets, references, background, counts)
    print(text)
    data = {
        "rates": {t.name: t.rates for t in targets},
        "cpu_us": {t.name: t.cpu_per_request() for t in targets},
        "instructions": counts,
    }
    results_files.save("hardening", started, text, data, args.out)
    return 0


def report(
    args: argparse.Namespace,
    started: dt.datetime,
    targets: list[interleaved.Target],
    references: dict[str, str],
    background: float,
    counts: dict[str, dict[str, float]],
) -> str:
    commit = results_files.tree_label()
    by_name = {target.name: target for target in targets}
    lines = [
        f"# What the hardening costs: router W1@64 — {started:%Y-%m-%d %H:%M} on {platform.node()}",
        "",
        f"`python bench/hardening_bench.py` at {commit}; *before* is {args.base}, *now* "
        f"{args.now or 'the working tree'}. Router -> agent -> "
        f"1 worker over unix for each system, all on CPU {SERVER_CPU}; the load (small protobuf echo over HTTP/1.1, "
        f"64 connections) from CPU {CLIENT_CPU}. Every system runs throughout; the load goes to one at a time in "
        f"turns of {args.slot:g} s, {args.rounds} rounds, the order reversed every other round "
        "(bench/interleaved.py), so the machine's drift touches all of them alike. Background load before the "
        f"start: {background:.0%} of both cores. Each system is compared with its reference in the same round: "
        "*before* with Python's garbage collector, or *before, collector tuned* for the systems with the "
        "collector tuned (bench/hardening_bench.py's docstring says why). *now* has no metrics, as *before*.",
        "",
        "| system | requests/s (median turn) | compared with | ratio (median of the rounds') | middle half of "
        "those ratios | CPU µs per request: router / agent / worker |",
        "|---|---:|---|---:|---|---|",
    ]
    ratios = {}
    for target in targets:
        reference = references[target.name]
        ratio, low, high = interleaved.paired_ratio(target, by_name[reference])
        ratios[target.name] = ratio
        cpu = target.cpu_per_request()
        shown = " / ".join(f"{cpu.get(role, 0):.0f}" for role in instructions.ROLES) if cpu else "—"
        lines.append(
            f"| {target.name} | {statistics.median(target.rates):,.0f} | {reference} | {ratio:.3f}x "
            f"| {low:.3f}-{high:.3f} | {shown} |"
        )
    if counts:
        lines += ["", *instruction_table(counts, references, args.instructions)]
    lines += ["", "| target | measured | |", "|---|---:|:---:|"]
    for name, what in TARGETS:
        reference = references[name]
        lines.append(f"| {what}: *{name}* ≥ 0.97x *{reference}*, requests/s | {ratios[name]:.3f}x "
                     f"| {_mark(ratios[name])} |")  # fmt: skip
        if name in counts and reference in counts:
            by_count = sum(counts[reference].values()) / sum(counts[name].values())
            lines.append(f"| the same in instructions per request ({reference} / {name}) | {by_count:.3f}x "
                         f"| {_mark(by_count)} |")  # fmt: skip
    return "\n".join(lines)


def instruction_table(counts: dict[str, dict[str, float]], references: dict[str, str], requests: int) -> list[str]:
    """Instructions per request by process (bench/instructions.py), and their sum against the reference's."""
    lines = [
        f"Instructions per request, counted by callgrind over {requests} W1 requests after 500 to warm up "
        "(the clock-driven background measured over as long again and subtracted; see bench/instructions.py):",
        "",
        "| system | router | agent | worker | all three | vs its reference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, by_role in counts.items():
        total = sum(by_role.values())
        reference = counts.get(references[name])
        against = f"{total / sum(reference.values()):.3f}x" if reference else "—"
        cells = " | ".join(f"{by_role[role] / 1000:,.1f}k" for role in instructions.ROLES)
        lines.append(f"| {name} | {cells} | {total / 1000:,.1f}k | {against} |")
    return lines


def _mark(ratio: float) -> str:
    return "✅" if ratio >= 0.97 else "❌"


if __name__ == "__main__":
    sys.exit(main())
