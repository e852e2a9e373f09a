"""The runner's CHAT report: the router's OpenAI chat against the same handler over ``/infer/stream``.

Used by ``bench/report.py`` and ``bench/report_targets.py`` (scripts' modules, imported from their directory).
"""

from __future__ import annotations

from typing import Any

from report_cells import cell_data, cpu_per_op, ratio, value
from systems import CHAT_SYSTEMS

#: The system whose CHAT cells the report reads.
SYSTEM = CHAT_SYSTEMS[0]
#: Tokens/s at c=16: OpenAI ÷ /infer/stream at least this.
TOKENS_RATIO = 0.9
#: TTFT p50 at c=1: OpenAI minus /infer/stream at most this many ms.
TTFT_ADDED_MS = 0.5


def chat_value(results: dict[str, Any], cell: str, key: str) -> float | None:
    return value(results, SYSTEM, "CHAT", cell, key)


def tokens_ratio(results: dict[str, Any]) -> float | None:
    return ratio(chat_value(results, "openai_c16", "rate"), chat_value(results, "kserve_c16", "rate"))


def ttft_added(results: dict[str, Any]) -> float | None:
    openai, kserve = chat_value(results, "openai_c1", "ttft_p50_ms"), chat_value(results, "kserve_c1", "ttft_p50_ms")
    if openai is None or kserve is None or openai != openai or kserve != kserve:
        return None
    return openai - kserve


def tokens_cpu_estimate(results: dict[str, Any]) -> float | None:
    """/infer/stream's CPU per token ÷ OpenAI's: the tokens/s ratio with a whole core each."""
    return ratio(cpu_per_op(results, SYSTEM, "CHAT", "kserve_c16"), cpu_per_op(results, SYSTEM, "CHAT", "openai_c16"))


def _rate(results: dict[str, Any], cell: str, unit: str = "") -> str:
    v = chat_value(results, cell, "ttft_p50_ms" if unit == "ms" else "rate")
    if v is None or v != v:
        return "—"
    text = f"{v:.2f} ms" if unit == "ms" else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")
    if cell_data(results, SYSTEM, "CHAT", cell).get("client_cpu", 0) > 0.9:
        text += " ⚠"
    return text


def _cpu(results: dict[str, Any], cell: str) -> str:
    data = cell_data(results, SYSTEM, "CHAT", cell)
    per, ops = data.get("server_cpu_s") or {}, data.get("ops_total") or 0
    if not per or not ops:
        return "—"
    parts = {role: seconds * 1e6 / ops for role, seconds in per.items()}
    return " + ".join(f"{role} {us:.0f}" for role, us in parts.items()) + f" = **{sum(parts.values()):.0f}**"


def _paired(results: dict[str, Any], cell: str, key: str, fmt: str, unit: str) -> str:
    v = chat_value(results, cell, key)
    return "" if v is None else f" (runs paired: {v:{fmt}}{unit})"


def chat_table(results: dict[str, Any]) -> list[str]:
    """The CHAT section's table, or nothing when the run has no CHAT cells."""
    if not isinstance(results.get(SYSTEM, {}).get("CHAT"), dict) or "error" in results[SYSTEM]["CHAT"]:
        return []
    r = tokens_ratio(results)
    added = ttft_added(results)
    unary = ratio(chat_value(results, "openai_unary_c64", "rate"), chat_value(results, "kserve_unary_c64", "rate"))
    cpu_tok = tokens_cpu_estimate(results)
    cpu_req = ratio(
        cpu_per_op(results, SYSTEM, "CHAT", "kserve_unary_c64"), cpu_per_op(results, SYSTEM, "CHAT", "openai_unary_c64")
    )
    x = lambda v: "—" if v is None else f"{v:.2f}x"  # noqa: E731
    rows = [
        (
            "256-token stream, tokens/s @ c=16",
            _rate(results, "openai_c16"),
            _rate(results, "kserve_c16"),
            x(r) + ("" if r is None else _paired(results, "openai_c16", "pair_ratios_median", ".2f", "x")),
        ),
        (
            "time to first token p50 @ c=1",
            _rate(results, "openai_c1", "ms"),
            _rate(results, "kserve_c1", "ms"),
            "—"
            if added is None
            else f"{added:+.2f} ms" + _paired(results, "openai_c1", "pair_ttft_diff_ms_median", "+.2f", " ms"),
        ),
        (
            "stream @ c=16: CPU µs per token, per process",
            _cpu(results, "openai_c16"),
            _cpu(results, "kserve_c16"),
            "" if cpu_tok is None else f"{cpu_tok:.2f}x ‡",
        ),
        (
            "non-streaming, 16 tokens, req/s @ c=64 (KServe: `POST /infer`)",
            _rate(results, "openai_unary_c64"),
            _rate(results, "kserve_unary_c64"),
            x(unary),
        ),
        (
            "non-streaming @ c=64: CPU µs per request, per process",
            _cpu(results, "openai_unary_c64"),
            _cpu(results, "kserve_unary_c64"),
            "" if cpu_req is None else f"{cpu_req:.2f}x ‡",
        ),
    ]
    lines = [
        "| chat via router, `bench-tokens` | OpenAI `/v1/chat/completions` | KServe v2 JSON `/infer/stream` | "
        "OpenAI vs KServe |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {a} | {b} | {c} |" for label, a, b, c in rows]
    return lines


def chat_notes() -> list[str]:
    return [
        'One handler, `@app.chat(model="bench-tokens")` in `servers/bench_app.py`: a no-compute engine that '
        "yields `max_tokens` small text tokens (the convention's stream adapter awaits `stream.drain()` after each, "
        "as the `tokens` handler does) and puts the finish reason and usage on the last one. Through the router "
        '(router → agent → 1 worker, pinned as above), called as OpenAI streaming chat (`"stream": true`, '
        "`stream_options.include_usage`; a token is a chunk with non-empty `choices[0].delta.content`) and as "
        "`POST /infer/stream` with `X-Capability-Type: chat`, `X-Capability-Model: bench-tokens` and a KServe v2 "
        "JSON body (`messages` BYTES [1]; a token is an event with non-empty `text_output`). The two streaming "
        "paths ran in alternating runs (A B, B A, ...); *runs paired* is the median over those pairs. *OpenAI vs "
        "KServe* is a ratio of rates, or for TTFT the milliseconds OpenAI adds. ‡ KServe's CPU per operation ÷ "
        "OpenAI's.",
        "",
    ]
