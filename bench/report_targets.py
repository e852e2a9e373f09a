"""The runner's targets: each stated goal with its measured figure, pass/fail and CPU-cost estimate.

Used by ``bench/run.py`` and ``bench/report.py`` (scripts' modules, imported from their directory).
"""

from __future__ import annotations

from typing import Any

from report_cells import cpu_per_op, ratio, value
from report_chat import TOKENS_RATIO, TTFT_ADDED_MS, tokens_cpu_estimate, tokens_ratio, ttft_added
from systems import LABELS, OBJ_SYSTEMS

#: (what, workload, cell, field, limit, lower is better): router-json ÷ http-json.
JSON_TARGETS = [
    ("W1@64 ≥ 0.4x bare HTTP (JSON)", "W1", "c64", "rate", 0.4, False),
    ("W2 (1 MiB as a JSON list) ≥ 0.6x bare HTTP (JSON)", "W2", "c2_json", "rate", 0.6, False),
    ("W3 SSE tokens/s @16 ≥ 0.5x bare HTTP (JSON)", "W3", "c16", "rate", 0.5, False),
    ("W3 first token p50 @ c=1 ≤ 1.5x bare HTTP (JSON)", "W3", "c1", "ttft_p50_ms", 1.5, True),
]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The stated targets, each with its measured figure and pass/fail (None: not measured)."""
    w1 = lambda s: value(results, s, "W1", "c64", "rate")  # noqa: E731
    out = []

    def add(
        text: str, measured: float | None, limit: float, below: bool = False, shown: str = "", cpu: float | None = None
    ) -> None:
        ok = None if measured is None else (measured <= limit if below else measured >= limit)
        row = {"target": text, "measured": measured, "limit": limit, "ok": ok, "shown": shown, "cpu_estimate": cpu}
        out.append(row)

    def cpu(system: str, workload: str, cell: str, floor: str = "grpc") -> float | None:
        # floor's CPU per op / the system's: the throughput ratio both would reach with a whole core each
        return ratio(cpu_per_op(results, floor, workload, cell), cpu_per_op(results, system, workload, cell))

    for system, limit in (("unix", 0.75), ("inproc", 0.9)):
        add(
            f"replica direct over {system}, W1@64 ≥ {limit:g}x bare grpc.aio",
            ratio(w1(system), w1("grpc")),
            limit,
            cpu=cpu(system, "W1", "c64"),
        )
    add(
        "through the router, W1@64 ≥ 0.5x bare grpc.aio",
        ratio(w1("router"), w1("grpc")),
        0.5,
        cpu=cpu("router", "W1", "c64"),
    )
    tok = ratio(value(results, "router", "W3", "c16", "rate"), value(results, "grpc", "W3", "c16", "rate"))
    add("through the router, W3 tokens/s @16 ≥ 0.8x bare grpc.aio", tok, 0.8, cpu=cpu("router", "W3", "c16"))
    ttft = value(results, "router", "W3", "c1", "ttft_p50_ms")
    add("through the router, W3 TTFT p50 @ c=1 ≤ 2 ms", ttft, 2.0, below=True, shown="ms")
    for system in OBJ_SYSTEMS:
        one = value(results, system, "OBJ", "ref_1", "p50_ms")
        big = value(results, system, "OBJ", "ref_256", "p50_ms")
        add(f"object by reference ({LABELS[system]}): 256 MiB ≤ 2x 1 MiB", ratio(big, one), 2.0, below=True)
    # KServe v2 JSON bodies: the router against the bare HTTP floor sent the same bodies.
    for text, workload, cell, key, limit, below in JSON_TARGETS:
        measured = ratio(
            value(results, "router-json", workload, cell, key), value(results, "http-json", workload, cell, key)
        )
        estimate = None if below else cpu("router-json", workload, cell, floor="http-json")
        add(f"through the router, JSON bodies: {text}", measured, limit, below=below, cpu=estimate)
    # OpenAI chat: the router's /v1 front against /infer/stream, the same chat handler behind both.
    add(
        f"through the router, OpenAI streaming chat: tokens/s @16 ≥ {TOKENS_RATIO:g}x the same handler "
        "via /infer/stream",
        tokens_ratio(results),
        TOKENS_RATIO,
        cpu=tokens_cpu_estimate(results),
    )
    add(
        f"through the router, OpenAI streaming chat: TTFT p50 @ c=1 ≤ /infer/stream's + {TTFT_ADDED_MS:g} ms",
        ttft_added(results),
        TTFT_ADDED_MS,
        below=True,
        shown="+ms",
    )
    return out


def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | measured | | CPU-cost estimate ‡ |", "|---|---:|:---:|---:|"]
    for row in rows:
        m = row["measured"]
        if m is None:
            shown = "—"
        elif row["shown"] == "ms":
            shown = f"{m:.2f} ms"
        elif row["shown"] == "+ms":
            shown = f"{m:+.2f} ms"
        else:
            shown = f"{m:.2f}x"
        mark = "—" if row["ok"] is None else ("✅" if row["ok"] else "❌")
        estimate = row.get("cpu_estimate")
        lines.append(f"| {row['target']} | {shown} | {mark} | {'' if estimate is None else f'{estimate:.2f}x'} |")
    return lines
