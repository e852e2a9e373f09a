"""Figures from guidellm's JSON reports, and the markdown bench/llm_bench.py writes.

Every figure is computed here the same way for every system, from guidellm's
per-request records (``benchmarks[0].requests.successful[*]``), so the direct
row, whose load is split over one guidellm per engine server, is merged like
any other: output tokens/s is every successful request's output tokens over
the time from the first request's start to the last one's end; TTFT p50/p99
and ITL p50 are percentiles over requests (ITL is guidellm's per-request
mean time between output tokens after the first).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import llm_router_ttft


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def load_requests(report: Path) -> dict[str, Any]:
    """Successful request records and error counts of one guidellm JSON report."""
    bench = json.loads(report.read_text())["benchmarks"][0]
    requests = bench["requests"]
    errors = [str((r.get("info") or {}).get("error")) for r in requests.get("errored") or []]
    totals = bench["metrics"]["request_totals"]
    keep = (
        "request_start_time",
        "request_end_time",
        "time_to_first_token_ms",
        "inter_token_latency_ms",
        "output_tokens",
        "prompt_tokens",
    )
    successful = [{k: r.get(k) for k in keep} for r in requests.get("successful") or []]
    return {
        "successful": successful,
        "errored": int(totals.get("errored", 0)),
        "incomplete": int(totals.get("incomplete", 0)),
        "errors": sorted(set(errors))[:5],
        "guidellm_summary": _guidellm_summary(bench["metrics"]),
    }


def _guidellm_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """guidellm's own figures, kept beside ours for reference."""

    def stat(name: str, key: str) -> Any:
        try:
            value = metrics[name]["successful"]
            for part in key.split("."):
                value = value[part]
            return value
        except (KeyError, TypeError):
            return None

    return {
        "ttft_ms_p50": stat("time_to_first_token_ms", "percentiles.p50"),
        "ttft_ms_p99": stat("time_to_first_token_ms", "percentiles.p99"),
        "itl_ms_p50": stat("inter_token_latency_ms", "percentiles.p50"),
        "output_tokens_per_second_mean": stat("output_tokens_per_second", "mean"),
    }


def summarize(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One measured run (one or several guidellm reports run at the same time) in figures."""
    records = [r for part in parts for r in part["successful"]]
    errored = sum(p["errored"] for p in parts)
    incomplete = sum(p["incomplete"] for p in parts)
    out: dict[str, Any] = {
        "successful": len(records),
        "errored": errored,
        "incomplete": incomplete,
        "errors": sorted({e for p in parts for e in p["errors"]})[:5],
    }
    if not records:
        return out
    start = min(r["request_start_time"] for r in records)
    end = max(r["request_end_time"] for r in records)
    output_tokens = sum(r["output_tokens"] or 0 for r in records)
    ttft = [r["time_to_first_token_ms"] for r in records if r["time_to_first_token_ms"] is not None]
    itl = [r["inter_token_latency_ms"] for r in records if r["inter_token_latency_ms"] is not None]
    out.update(
        window=(start, end),
        duration_s=end - start,
        output_tokens=output_tokens,
        output_tokens_mean=output_tokens / len(records),
        prompt_tokens_mean=statistics.fmean(r["prompt_tokens"] or 0 for r in records),
        output_tps=output_tokens / max(1e-9, end - start),
        ttft_ms=ttft,
        itl_ms=itl,
    )
    return out


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A system's rounds together: throughput is the mean of the rounds', latencies pooled over them."""
    ok = [r for r in runs if r.get("successful")]
    ttft = [v for r in ok for v in r["ttft_ms"]]
    itl = [v for r in ok for v in r["itl_ms"]]
    return {
        "rounds": len(runs),
        "successful": sum(r.get("successful", 0) for r in runs),
        "errored": sum(r.get("errored", 0) for r in runs),
        "incomplete": sum(r.get("incomplete", 0) for r in runs),
        "output_tps": statistics.fmean(r["output_tps"] for r in ok) if ok else None,
        "output_tps_rounds": [r.get("output_tps") for r in runs],
        "ttft_p50": percentile(ttft, 50),
        "ttft_p99": percentile(ttft, 99),
        "itl_p50": percentile(itl, 50),
        "ttft_p50_rounds": [percentile(r.get("ttft_ms") or [], 50) for r in runs],
        "ttft_p99_rounds": [percentile(r.get("ttft_ms") or [], 99) for r in runs],
        "itl_p50_rounds": [percentile(r.get("itl_ms") or [], 50) for r in runs],
        "output_tokens_mean": statistics.fmean(r["output_tokens_mean"] for r in ok) if ok else None,
        "prompt_tokens_mean": statistics.fmean(r["prompt_tokens_mean"] for r in ok) if ok else None,
        "errors": sorted({e for r in runs for e in r.get("errors", [])})[:5],
    }


# ------------------------------------------------------------------------------------------ markdown


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    return "" if value is None or not base else f" ({value / base:.2f}x)"


def _diff(value: float | None, base: float | None) -> str:
    return "" if value is None or base is None else f" ({value - base:+.1f})"


#: (figure, key in combine(), higher is better, unit)
FIGURES = (
    ("output tokens/s", "output_tps", True, "tok/s"),
    ("TTFT p50", "ttft_p50", False, "ms"),
    ("TTFT p99", "ttft_p99", False, "ms"),
    ("ITL p50", "itl_p50", False, "ms"),
)


def spread(systems: list[dict[str, Any]], key: str) -> float:
    """The largest round-to-round range of one figure among ``systems``: what noise alone moves it by."""
    ranges = []
    for comb in systems:
        values = [v for v in comb.get(f"{key}_rounds") or [] if v is not None]
        if len(values) > 1:
            ranges.append(max(values) - min(values))
    return max(ranges, default=0.0)


#: The anyserve rows held to the targets, and their labels there.
ANYSERVE_ROWS = (
    ("anyserve", "anyserve → llama-server"),
    ("anyserve-rr", "anyserve → llama-server, round robin"),
    ("anyserve-plugin", "anyserve, in-replica plugin"),
)
#: The anyserve row compared figure by figure with the peers: the one routing as they are told to (round robin),
#: so a difference is the router's, not the policy's. The default (least load) trades TTFT against ITL otherwise.
LIKE_FOR_LIKE = "anyserve-rr"
#: The systems that reach an engine directly, and which system each anyserve path is measured against.
DIRECT = ("direct", "direct-llamacpp")
FLOOR = {"anyserve-plugin": "direct-llamacpp"}


def floor(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The combined figures of the same engine reached directly, which ``key``'s are compared with."""
    if key in DIRECT:
        return None
    return results.get(FLOOR.get(key, "direct"), {}).get("combined")


#: Which no-compute row of bench/llm_router_ttft.py measures each anyserve path's own TTFT.
ROUTER_TTFT_ROW = {"anyserve": "anyserve", "anyserve-rr": "anyserve", "anyserve-plugin": "anyserve-replica"}


def targets(
    results: dict[str, Any], router_ttft: dict[str, Any] | None = None
) -> list[tuple[str, str, bool | None, str]]:
    """(target, measured, met, noise note); ``met`` is None when a figure is missing.

    The 2 ms TTFT target is judged in front of the no-compute engine when
    ``router_ttft`` has it: with real engines the rounds differ by tens of ms.
    """
    rows: list[tuple[str, str, bool | None, str]] = []
    precise = router_ttft if router_ttft and not router_ttft.get("error") else None
    peers = {k: results[k]["combined"] for k in ("smg", "vllm-router") if results.get(k, {}).get("combined")}
    for key, label in ANYSERVE_ROWS:
        mine, direct = results.get(key, {}).get("combined"), floor(results, key)
        if not mine or not direct or mine.get("output_tps") is None or direct.get("output_tps") is None:
            rows.append((f"{label}: output tokens/s ≥ 0.95x direct", "not measured", None, ""))
            continue
        ratio = mine["output_tps"] / direct["output_tps"]
        rows.append((f"{label}: output tokens/s ≥ 0.95x direct", f"{ratio:.3f}x", ratio >= 0.95, ""))
        added = mine["ttft_p50"] - direct["ttft_p50"]
        noise = spread([mine, direct], "ttft_p50")
        note = f"rounds differ by up to {noise:,.0f} ms" if noise else ""
        own = None if precise is None else llm_router_ttft.added_ms(precise, ROUTER_TTFT_ROW[key])
        if own is None:
            rows.append((f"{label}: TTFT p50 added vs direct ≤ 2 ms", f"{added:+.2f} ms", added <= 2.0, note))
        else:
            note = f"with the real engines {added:+.1f} ms" + (f", whose {note}" if note else "")
            rows.append((f"{label}: TTFT p50 added ≤ 2 ms (no-compute engine)", f"{own:+.2f} ms", own <= 2.0, note))
        if key != LIKE_FOR_LIKE:
            continue
        for peer, theirs in peers.items():
            if theirs.get("output_tps") is None:
                continue
            for name, fig, higher_better, unit in FIGURES:
                a, b = mine[fig], theirs[fig]
                noise = spread([mine, theirs], fig)
                # Worse only by more than the rounds of one system differ: less is not a measured difference.
                met = (a >= b - noise) if higher_better else (a <= b + noise)
                as_measured = a >= b if higher_better else a <= b
                note = ""
                if noise:
                    within = "within" if abs(a - b) <= noise else "beyond"
                    note = f"{within} the round-to-round range ({noise:,.2f} {unit})"
                if not as_measured and met:
                    note = f"behind as measured, {note}"
                measured = f"{a:,.2f} vs {b:,.2f} {unit} ({a - b:+.2f})"
                rows.append((f"{label}: {name} no worse than {peer}", measured, met, note))
    return rows


def markdown(run: dict[str, Any]) -> str:
    cfg = run["config"]
    results = run["results"]
    lines = [
        f"# anyserve vs peer routers: LLM serving, SmolLM2-135M on llama.cpp — {run['started']} on {run['host']}",
        "",
        f"`{run['command']}`",
        "",
        (
            f"guidellm {run['versions'].get('guidellm', '?')}, profile `concurrent` with {cfg['concurrency']} streams, "
            f"{cfg['requests']} requests per system and round, synthetic prompts of {cfg['prompt_tokens']} tokens "
            f"(guidellm's tokenizer) asking for {cfg['output_tokens']} output tokens, streamed chat completions; "
            f"the same data for every system. "
            + (
                f"{cfg['rounds']} rounds, the order of the systems reversed every other round. "
                if cfg["rounds"] > 1
                else "One round. "
            )
            + f"Engines: {cfg['engines']} llama-server processes ({cfg['slots']} slots, 1 thread each), all pinned to "
            f"CPU {cfg['engine_cpu']}; every router and guidellm pinned to CPU {cfg['front_cpu']}. "
            "Throughput is the mean over rounds; latencies are percentiles over all requests of all rounds."
        ),
        "",
        "## Results",
        "",
        "| system | output tokens/s | TTFT p50 (ms) | TTFT p99 (ms) | ITL p50 (ms) | ok / errors | "
        "router CPU per request (ms) | engine core busy | CPU 1 busy: router + guidellm |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, entry in results.items():
        label = entry["label"]
        comb = entry.get("combined")
        if not comb or comb.get("output_tps") is None:
            reason = entry.get("unavailable") or entry.get("error") or "no successful request"
            lines.append(f"| {label} | not available: {one_line(reason)} | | | | | | | |")
            continue
        direct = floor(results, key) or {}
        rel = direct.get("output_tps")
        tps = _num(comb["output_tps"]) + (_ratio(comb["output_tps"], direct.get("output_tps")) if rel else "")
        p50 = _num(comb["ttft_p50"]) + (_diff(comb["ttft_p50"], direct.get("ttft_p50")) if rel else "")
        p99 = _num(comb["ttft_p99"]) + (_diff(comb["ttft_p99"], direct.get("ttft_p99")) if rel else "")
        itl = _num(comb["itl_p50"], 2) + (_diff(comb["itl_p50"], direct.get("itl_p50")) if rel else "")
        errors = comb["errored"] + comb["incomplete"]
        cpu = entry.get("front_cpu_ms_per_request")
        busy = entry.get("engine_core_busy")
        if busy is None:
            busy_cells = "— | —"
        else:
            router_busy = entry.get("front_core_busy") or 0
            loadgen_busy = entry.get("loadgen_core_busy") or 0
            busy_cells = (
                f"{busy * 100:.0f}% | {router_busy * 100:.0f}% + {loadgen_busy * 100:.0f}% "
                f"= {(router_busy + loadgen_busy) * 100:.0f}%"
            )
        lines.append(
            f"| {label} | {tps} | {p50} | {p99} | {itl} | {comb['successful']} / {errors} | "
            f"{'—' if cpu is None else f'{cpu:.2f}'} | {busy_cells} |"
        )
    lines += [
        "",
        "Ratios (x) are against the same engine reached directly (*direct to llama-server*; for the in-replica "
        "plugin, *direct to the plugin's engine*: the same llama-cpp-python engine behind a bare HTTP server); "
        "(+/-) are milliseconds added to that figure. "
        "CPU figures are user + "
        "system CPU time from `/proc`, sampled every 0.25 s and taken over the measured window (first request sent "
        "to last answer ended): *router CPU per request* is the router's (smg's, vllm-router's) per successful "
        "request; *engine core busy* is the engines' CPU over the window's length (llama-server, or for the "
        "in-replica plugin the replicas' agents and workers), near 100% when the engines are the bottleneck; "
        f"*CPU 1 busy* is the router's and guidellm's share of CPU {cfg['front_cpu']}, the core they share.",
        "",
        "Per round (output tokens/s, TTFT p50 ms, TTFT p99 ms, ITL p50 ms):",
        "",
        "| system | " + " | ".join(f"round {i + 1}" for i in range(cfg["rounds"])) + " |",
        "|---|" + "---:|" * cfg["rounds"],
    ]
    for entry in results.values():
        comb = entry.get("combined")
        if not comb or comb.get("output_tps") is None:
            continue
        per_round = zip(
            comb["output_tps_rounds"], comb["ttft_p50_rounds"], comb["ttft_p99_rounds"], comb["itl_p50_rounds"],
            strict=False,
        )  # fmt: skip
        cells = [f"{_num(t)} / {_num(p)} / {_num(q)} / {_num(i, 2)}" for t, p, q, i in per_round]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    router_ttft = run.get("router_ttft")
    if router_ttft:
        lines += ["", "## What a router adds to the first token", ""]
        if router_ttft.get("error"):
            lines.append(f"Not measured: {router_ttft['error']}")
        else:
            lines += llm_router_ttft.section(router_ttft)
            lines += [
                "",
                "The real engines' TTFT moves by tens of milliseconds between rounds, so the 2 ms target is judged "
                "here, where the engine takes no time: the replica row is the in-replica plugin's path (router, "
                "agent, worker, the LLM handler convention) with a no-compute handler in place of llama.cpp.",
            ]
    lines += ["", "## Targets", "", "| target | measured | | noise |", "|---|---:|:---:|---|"]
    for name, measured, met, note in targets(results, router_ttft):
        mark = "—" if met is None else ("✅" if met else "❌")
        lines.append(f"| {name} | {measured} | {mark} | {note} |")
    lines += [
        "",
        "*noise*: the largest range of that figure between rounds of the same system, among the systems "
        "compared. Throughput and TTFT against direct are judged as measured; against a peer, a figure is worse "
        "only when it is behind by more than that range (less is not a measured difference, and the note says "
        "*behind as measured* where it is). The peers are compared with the anyserve row that routes as they are "
        "told to (round robin), so a difference is the router's, not the policy's.",
        "",
        "## Systems and command lines",
        "",
    ]
    for entry in [{"label": "engine servers (shared by every system but the in-replica plugin)",
                   "commands": run["engines"]["commands"], "notes": ""}, *results.values()]:  # fmt: skip
        lines += [f"**{entry['label']}**" + (f" — {entry['notes']}" if entry.get("notes") else ""), ""]
        if entry.get("commands"):
            lines += ["```", *[relative(c, run) for c in entry["commands"]], "```", ""]
        elif entry.get("unavailable"):
            lines += [f"not available: {entry['unavailable']}", ""]
    lines += [
        "Load generator, for each system (direct: one per engine server, each with half the streams and requests):",
        "",
        "```",
        relative(run["guidellm_command"], run),
        "```",
        "",
    ]
    return "\n".join(lines + environment(run))


def environment(run: dict[str, Any]) -> list[str]:
    """The report's last section: versions, the machine, and how busy it was with other work."""
    lines = ["## Environment", ""]
    lines += [f"- {name}: {value}" for name, value in run["versions"].items()]
    lines += [
        f"- machine: {run['cpu']}, {run['cores']} cores; load average at start {run['loadavg_start']}, "
        f"at end {run.get('loadavg_end', '?')}",
        "- background load (share of both cores busy with other processes, sampled for 1 s before each system): "
        + ", ".join(f"{k} {v * 100:.0f}%" for k, v in run["background"].items()),
        "",
    ]
    return lines


def one_line(text: str) -> str:
    first = str(text).strip().splitlines()[0] if str(text).strip() else str(text)
    return first.replace("|", "/")[:300]


def relative(command: str, run: dict[str, Any]) -> str:
    return command.replace(run["root"] + "/", "").replace(run["work"], "$WORK")
