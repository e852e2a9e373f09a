"""The runner's report: the markdown tables (results, OpenAI chat, targets, CPU per operation, objects), environment.

Used by ``bench/run.py`` (a script; this module is imported from its directory).
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Any

from processes import SERVER_CPU
from report_cells import cell_data, core_share, ratio, value
from report_chat import chat_notes, chat_table
from report_targets import targets_table
from systems import ANYSERVE, HTTP_FLOOR, JSON_SYSTEMS, LABELS, OBJ_SYSTEMS, SYSTEMS


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or value != value:
        return "—"
    if unit == "ms":
        return f"{value:.2f} ms"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


#: (row label, workload, cell, field, unit, higher_is_better)
METRICS = [
    ("W1 small echo, req/s @ c=1", "W1", "c1", "rate", "", True),
    ("W1 small echo, req/s @ c=64", "W1", "c64", "rate", "", True),
    ("W1 latency p50 @ c=1", "W1", "c1", "p50_ms", "ms", False),
    ("W1 latency p99 @ c=1", "W1", "c1", "p99_ms", "ms", False),
    ("W2 1 MiB echo, MiB/s @ c=8", "W2", "c8", "rate", "", True),
    ("W2 1 MiB echo, JSON list of 1,048,576 numbers, MiB/s @ c=2 §", "W2", "c2_json", "rate", "", True),
    ("W2 1 MiB echo, binary extension, MiB/s @ c=8", "W2", "c8_binary", "rate", "", True),
    ("W3 256-token stream, tokens/s @ c=16", "W3", "c16", "rate", "", True),
    ("W3 time to first token p50 @ c=1", "W3", "c1", "ttft_p50_ms", "ms", False),
    ("W1 sync (thread-pool) handler, req/s @ c=64 †", "W1", "c64_sync", "rate", "", True),
]


def main_table(results: dict[str, Any], systems: list[str]) -> list[str]:
    head = "| metric | " + " | ".join(LABELS[s] for s in systems) + " |"
    lines = [head, "|---|" + "---:|" * len(systems)]
    for label, workload, cell, key, unit, _ in METRICS:
        if not any(value(results, s, workload, cell, key) is not None for s in systems):
            continue
        row = [label]
        grpc_floor = value(results, "grpc", workload, cell, key)
        for system in systems:
            v = value(results, system, workload, cell, key)
            text = fmt(v, unit)
            data = cell_data(results, system, workload, cell)
            if data.get("client_cpu", 0) > 0.9:
                text += " ⚠"
            if system in ANYSERVE and v is not None:
                parts = []
                r = None if system in JSON_SYSTEMS else ratio(v, grpc_floor)
                if r is not None:
                    parts.append(f"{r:.2f}x grpc")
                if system in HTTP_FLOOR:
                    r = ratio(v, value(results, HTTP_FLOOR[system], workload, cell, key))
                    if r is not None:
                        parts.append(f"{r:.2f}x http")
                if parts:
                    text += " (" + ", ".join(parts) + ")"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def objects_table(results: dict[str, Any]) -> list[str]:
    systems = [s for s in OBJ_SYSTEMS if isinstance(results.get(s, {}).get("OBJ"), dict)]
    if not systems:
        return []
    sizes = sorted(
        {int(k.split("_")[1]) for s in systems for k in results[s]["OBJ"] if k.startswith(("ref_", "inline_"))}
    )
    head = ["size"]
    for s in systems:
        head += [f"{LABELS[s]}: inline", f"{LABELS[s]}: by ref"]
    head.append("client create (write to store)")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for mib in sizes:
        row = [f"{mib} MiB"]
        create = None
        for s in systems:
            obj = results[s]["OBJ"]
            inline = obj.get(f"inline_{mib}", {}).get("p50_ms")
            ref = obj.get(f"ref_{mib}", {}).get("p50_ms")
            create = create or obj.get(f"ref_{mib}", {}).get("create_ms")
            row += [fmt(inline, "ms"), fmt(ref, "ms")]
        row.append(fmt(create, "ms"))
        lines.append("| " + " | ".join(row) + " |")
    return lines


#: (column label, workload, cell, unit of one op)
CPU_CELLS = [
    ("W1 @ c=64, µs per request", "W1", "c64"),
    ("W1 @ c=1, µs per request", "W1", "c1"),
    ("W2 @ c=8, µs per MiB echoed", "W2", "c8"),
    ("W2 JSON @ c=2, µs per MiB echoed", "W2", "c2_json"),
    ("W2 binary ext. @ c=8, µs per MiB echoed", "W2", "c8_binary"),
    ("W3 @ c=16, µs per token", "W3", "c16"),
]


def cpu_table(results: dict[str, Any], systems: list[str]) -> list[str]:
    """CPU time (user + sys) each process of a system spent per operation, from /proc over the window."""
    lines = ["| system | " + " | ".join(c[0] for c in CPU_CELLS) + " |", "|---|" + "---:|" * len(CPU_CELLS)]
    for system in systems:
        row = [LABELS[system]]
        for _, workload, cell in CPU_CELLS:
            data = cell_data(results, system, workload, cell)
            per = data.get("server_cpu_s") or {}
            ops = data.get("ops_total") or 0
            if not per or not ops:
                row.append("—")
                continue
            parts = {role: seconds * 1e6 / ops for role, seconds in per.items()}
            total = sum(parts.values())
            if len(parts) == 1:
                text = f"{total:.0f}"
            else:
                text = " + ".join(f"{role} {us:.0f}" for role, us in parts.items()) + f" = **{total:.0f}**"
            share = core_share(results, system, workload, cell)
            if share is not None and share < 0.9 and cell != "c1":  # at c=1 the core is idle between calls
                text += f" ({share:.0%} of core 0)"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (
        "anyserve-core",
        "anyserve-router",
        "grpcio",
        "protobuf",
        "uvicorn",
        "starlette",
        "httptools",
        "uvloop",
        "orjson",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def json_notes(systems: list[str]) -> list[str]:
    """What the JSON columns are, when the run has them."""
    if not any(s in JSON_SYSTEMS for s in systems):
        return []
    return [
        "*, JSON* columns: the same HTTP servers sent what KServe REST clients send, each body built once per "
        "run: KServe v2 JSON to `POST /v2/models/echo/infer` (W1: FP32[16] as a JSON list; W2: UINT8[1048576] "
        "as a JSON list of numbers, or as the binary tensor extension: a JSON header with `binary_data_size`, "
        "the bytes after it, `Inference-Header-Content-Length`, the answer asked for in binary), and W3 "
        "`POST /infer/stream` with a JSON body, answered as SSE. The floor (`servers/json_echo.py`) parses "
        "with the stdlib `json` and echoes each input as an output; their **x http** is against *bare HTTP, "
        "JSON*, the floor sent the same bodies.",
        "",
        "§ a JSON call costs a large fraction of a second of CPU, so few end inside a window: two calls in "
        "flight, and the rate is every call started in the window over the time until the last one ended.",
        "",
    ]


def results_section(results: dict[str, Any], systems: list[str]) -> list[str]:
    """The main table, or nothing when the run measured none of its rows (``--only CHAT``, ``--only OBJ``)."""
    table = main_table(results, systems)
    if len(table) <= 2:
        return []
    lines = ["## Results", "", *table, ""]
    if any(value(results, s, "W1", "c64_sync", "rate") is not None for s in systems):
        lines += [
            "† supplementary: the same echo written as a plain `def` handler (runs in the worker's thread pool); "
            "the main rows use `async def` handlers, like the floors.",
            "",
        ]
    return lines


def cpu_section(results: dict[str, Any], systems: list[str]) -> list[str]:
    """CPU per operation, or nothing when no cell of the table was measured."""
    if not any(cell_data(results, s, w, c).get("server_cpu_s") for s in systems for _, w, c in CPU_CELLS):
        return []
    return [
        "## Where the CPU goes",
        "",
        "CPU time (user + system, from `/proc/<pid>/stat`) each process of the system under test used per "
        "operation during the measured runs. On one shared core this, not wall time, says which hop costs what. "
        "*(N% of core 0)*: the system itself used only that share of its core in a throughput cell "
        "(the rest was idle or taken by other processes), so its measured rate is low by about that much.",
        "",
        *cpu_table(results, systems),
        "",
    ]


def chat_section(results: dict[str, Any]) -> list[str]:
    table = chat_table(results)
    if not table:
        return []
    return ["## OpenAI chat through the router vs `/infer/stream`", "", *table, "", *chat_notes()]


def render(report: dict[str, Any]) -> str:
    results = report["results"]
    systems = [s for s in SYSTEMS if s in results]
    env = report["environment"]
    lines = [
        f"# anyserve vs bare floors — {report['started']} on {env['host']}",
        "",
        f"`python bench/run.py {' '.join(report['argv'])}`".replace(" `", "`"),
        "",
        "Each system ran alone, all its processes pinned to CPU 0; the load generator pinned to CPU 1. "
        f"Figures are the median of {report['settings']['runs']} run(s) of {report['settings']['duration']:g} s "
        f"after {report['settings']['warmup']:g} s of warm-up. Ratios are anyserve ÷ floor: "
        "**x grpc** against the bare grpc.aio floor (same gRPC load generator for direct replicas; "
        "for the router the client speaks HTTP, the gRPC floor is the bar the targets set), "
        "**x http** against the bare uvicorn/Starlette floor (same HTTP load generator). "
        "Above 1 is better for rates, below 1 is better for latencies. "
        "⚠ = the load generator used > 90% of its core, so that figure is a lower bound set by the client.",
        "",
        *results_section(results, systems),
        *json_notes(systems),
        *chat_section(results),
        "## Targets",
        "",
        *targets_table(report["targets"]),
        "",
        "‡ the floor's CPU time per operation divided by the system's (table below): the throughput ratio the "
        "two would reach if each had the whole core. It does not move with background load or with a client "
        "that cannot keep the server busy, so it is the steadier figure when the two disagree; the targets "
        "are judged on the measured column.",
        "",
        *cpu_section(results, systems),
    ]
    obj = objects_table(results)
    if obj:
        lines += [
            "## Objects: inline vs by reference (median ms per call)",
            "",
            "Inline: the object travels in the request (`raw_input_contents`; protobuf body through the router); "
            "the handler answers its length. By reference: the client first writes the object into the shared "
            "`file://` store (*client create*, not part of the call) and sends only its `fs://` ObjRef; the "
            "handler `stat`s it. Direct = gRPC to the unix replica; router = HTTP protobuf to `POST /infer`. "
            "The target compares the by-reference call at 256 MiB with the one at 1 MiB.",
            "",
            *obj,
            "",
        ]
    ob = report.get("objects_bench")
    if ob:
        lines += ["## bench/objects_bench.py (its own processes, not pinned)", ""]
        if "markdown" in ob:
            body = ob["markdown"].splitlines()
            if body and body[0].startswith("# "):
                body = body[1:]
            lines += [*(("#" + line) if line.startswith("## ") else line for line in body), ""]
        else:
            lines += [f"failed: {ob.get('error')}", "", "```", ob.get("tail", ""), "```", ""]
    lines += ["## Environment", ""]
    lines += [
        f"* host `{env['host']}`, {env['cpus']} CPUs ({env['cpu_model']}), Linux {env['kernel']}, "
        f"Python {env['python']}",
        "* " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "* background load before each system (both cores, other people's processes): "
        + ", ".join(f"{s} {v:.0%}" for s, v in env["background"].items()),
        f"* whole run {report['wall_s']:.0f} s",
    ]
    for system in systems:
        pinned = report["pinned"].get(system, [])
        if pinned:
            lines.append(
                f"* {system}: {len(pinned)} process(es) on CPU {SERVER_CPU} "
                f"(pids {', '.join(str(p['pid']) for p in pinned)})"
            )
    cpu_notes = []
    for system in systems:
        for workload in ("W1", "W2", "W3", "CHAT"):
            for cell, data in (results.get(system, {}).get(workload) or {}).items():
                if isinstance(data, dict) and "client_cpu" in data:
                    cpu_notes.append(
                        f"{system}/{workload}/{cell} {data['client_cpu']:.0%}/{data.get('server_core', 0):.0%}"
                    )
    if cpu_notes:
        lines += [
            "* load generator CPU / core 0 busy, per cell: " + "; ".join(cpu_notes),
        ]
    errors = report.get("errors") or {}
    if errors:
        lines += ["", "## Errors", ""] + [f"* {k}: {v}" for k, v in errors.items()]
    return "\n".join(lines) + "\n"
