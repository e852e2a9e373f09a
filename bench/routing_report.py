"""Figures and the markdown report of bench/routing_bench.py.

Every figure comes from the client's per-request records (routing_workload.Record)
and the engines' own counters, computed the same way for every system, the
floor included. A request's cache outcome is read from what its engine said
(``timings.cache_n``, the prompt tokens it did not compute), so it shows what
the routing achieved whatever the router believed.
"""

from __future__ import annotations

import statistics
from typing import Any

from llm_report import environment, one_line, percentile, relative, spread

#: Below this share of its prompt read from cache a request counts as a miss (the chat template's first tokens are
#: shared by every prompt, so a request is seldom at exactly 0).
MISS_BELOW = 0.5


def cache_outcome(rec: dict[str, Any], previous: dict[str, Any] | None, system_tokens: int) -> str:
    """``history``: everything its previous turn sent was cached; ``system``: its system prompt was; else ``miss``."""
    cached = rec.get("cache_n") or 0
    if previous is not None and previous.get("prompt_tokens") and cached >= previous["prompt_tokens"]:
        return "history"
    if cached >= system_tokens:
        return "system"
    return "miss"


def summarize(run: dict[str, Any], system_tokens: int) -> dict[str, Any]:
    """One system's measured run in figures (``run``: records, window, CPU and engine counters)."""
    records = run["records"]
    ok = [r for r in records if not r["error"] and r["ttft_ms"] is not None]
    out: dict[str, Any] = {
        "sent": len(records),
        "successful": len(ok),
        "errored": len(records) - len(ok),
        "errors": sorted({r["error"] for r in records if r["error"]})[:5],
        "planned": run["planned"],
    }
    if not ok:
        return out
    start, end = min(r["start"] for r in ok), max(r["end"] for r in ok)
    ttft = [r["ttft_ms"] for r in ok]
    first = [r["ttft_ms"] for r in ok if r["turn"] == 0]
    later = [r["ttft_ms"] for r in ok if r["turn"] > 0]
    by_user: dict[int, dict[int, dict[str, Any]]] = {}
    for r in ok:
        by_user.setdefault(r["user"], {})[r["turn"]] = r
    outcomes = {"history": 0, "system": 0, "miss": 0}
    for r in ok:
        outcomes[cache_outcome(r, by_user[r["user"]].get(r["turn"] - 1), system_tokens)] += 1
    cached = sum(r["cache_n"] or 0 for r in ok)
    computed = sum(r["prompt_n"] or 0 for r in ok)
    out.update(
        duration_s=end - start,
        requests_per_s=len(ok) / max(1e-9, end - start),
        ttft_p50=percentile(ttft, 50),
        ttft_p99=percentile(ttft, 99),
        ttft_p50_first_turn=percentile(first, 50),
        ttft_p50_follow_up=percentile(later, 50),
        itl_p50=percentile([r["itl_ms"] for r in ok if r["itl_ms"] is not None], 50),
        prefill_ms_p50=percentile([r["prompt_ms"] for r in ok if r["prompt_ms"] is not None], 50),
        computed_tokens_mean=computed / len(ok),
        prompt_tokens_mean=statistics.fmean(r["prompt_tokens"] or 0 for r in ok),
        output_tokens_mean=statistics.fmean(r["completion_tokens"] or 0 for r in ok),
        cached_share=cached / max(1, cached + computed),
        outcomes={k: v / len(ok) for k, v in outcomes.items()},
    )
    out["engines"] = per_engine(run, len(ok))
    out["placement"] = placement(ok, by_user)
    front = run.get("cpu", {}).get("front")
    out["front_cpu_ms_per_request"] = None if front is None else 1000 * front / len(ok)
    out["front_cpu_share"] = None if front is None else front / max(1e-9, end - start)
    out["engine_core_others"] = run.get("cpu", {}).get("engine_core_others")
    return out


def placement(ok: list[dict[str, Any]], by_user: dict[int, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Where requests went, for those whose engine is known: how often a follow-up found its previous turn's
    engine, and over how many engines each system prompt's requests were spread."""
    placed = [r for r in ok if r.get("engine")]
    pairs = [
        (by_user[r["user"]][r["turn"] - 1]["engine"], r["engine"])
        for r in placed
        if r["turn"] > 0 and (by_user[r["user"]].get(r["turn"] - 1) or {}).get("engine")
    ]
    spread: dict[int, set[int]] = {}
    for r in placed:
        spread.setdefault(r["prompt"], set()).add(r["engine"])
    return {
        "placed": len(placed),
        "follow_ups": len(pairs),
        "follow_ups_same_engine": sum(1 for a, b in pairs if a == b),
        "engines_per_prompt": [len(spread[p]) for p in sorted(spread)],
    }


def per_engine(run: dict[str, Any], requests: int) -> list[dict[str, Any]]:
    """Each engine's share of the measured requests (generated tokens / answer length) and of the prompt work."""
    rows = []
    output = max(1, run["max_tokens"])
    for i, (before, after) in enumerate(zip(run["counters_before"], run["counters_after"], strict=True)):
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        rows.append(
            {
                "engine": i + 1,
                "requests": round(delta.get("tokens_predicted_total", 0.0) / output),
                "computed_tokens": int(delta.get("prompt_tokens_total", 0.0)),
                "cached_tokens": int(delta.get("prompt_tokens_cached_total", 0.0)),
                "busy": (run.get("cpu", {}).get("engines") or [None] * len(run["counters_after"]))[i],
            }
        )
    return rows


# ------------------------------------------------------------------------------------------ targets


def best_peer(results: dict[str, Any]) -> tuple[str, float, float] | None:
    """The peer with the lowest TTFT p50: its label, that p50, and its rounds' range (0.0 for one round)."""
    peers = [
        (e["label"], e["summary"]["ttft_p50"], spread([e["summary"]], "ttft_p50"))
        for e in results.values()
        if e.get("kind") == "peer" and (e.get("summary") or {}).get("ttft_p50") is not None
    ]
    return min(peers, key=lambda p: p[1]) if peers else None


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met); ``met`` is None when a figure is missing.

    With several rounds, each figure is a system's median round, and the
    prefix-aware row counts as behind a peer only by more than the larger
    of the two systems' round-to-round ranges (as bench/llm_report.py
    judges the peers): less than that is not a measured difference.
    """
    mine = (results.get("prefix", {}).get("summary") or {}).get("ttft_p50")
    base = (results.get("round-robin", {}).get("summary") or {}).get("ttft_p50")
    rows: list[tuple[str, str, bool | None]] = []
    name = "prefix-aware TTFT p50 ≤ 1/5 of round robin's"
    if mine is None or base is None:
        rows.append((name, "not measured", None))
    else:
        rows.append((name, f"{mine:,.0f} vs {base:,.0f} ms ({mine / base:.2f}x)", mine <= base / 5))
    name = "prefix-aware TTFT p50 no worse than the best peer router's"
    peer = best_peer(results)
    if mine is None or peer is None:
        rows.append((name, "not measured", None))
    else:
        noise = max(peer[2], spread([results["prefix"]["summary"]], "ttft_p50"))
        measured = f"{mine:,.0f} vs {peer[1]:,.0f} ms ({peer[0]}; {mine / peer[1]:.2f}x)"
        if noise:
            within = "within" if abs(mine - peer[1]) <= noise else "beyond"
            behind = "behind as measured, " if mine > peer[1] and mine <= peer[1] + noise else ""
            measured += f"; {behind}{within} the round-to-round range ({noise:,.0f} ms)"
        rows.append((name, measured, mine <= peer[1] + noise))
    return rows


# ------------------------------------------------------------------------------------------ markdown


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def _host_cache(cache_ram: int | None) -> str:
    """The engines' host-memory prompt cache, as the run configured it (runs before the option had none set)."""
    if cache_ram is None:
        return "host prompt cache as llama-server ships it (`--cache-ram` 8192 MiB)"
    if cache_ram == 0:
        return "no host prompt cache (`--cache-ram 0`: an engine caches what its slots hold)"
    return f"a host prompt cache of {cache_ram} MiB (`--cache-ram {cache_ram}`)"


def markdown(run: dict[str, Any]) -> str:
    cfg, results = run["config"], run["results"]
    base = (results.get("round-robin", {}).get("summary") or {}).get("ttft_p50")
    lines = [
        f"# LLM-aware routing on real engines: SmolLM2-135M on llama-server — {run['started']} on {run['host']}",
        "",
        f"`{run['command']}`",
        "",
        (
            f"{cfg['users']} users, each bound to one of {cfg['prompts']} system prompts of {cfg['prompt_tokens']} "
            f"tokens (user u → prompt u mod {cfg['prompts']}), each sending {cfg['turns']} turns of "
            f"{cfg['turn_tokens']} tokens; every turn resends the conversation so far, the previous answers "
            f"({cfg['max_tokens']} tokens each, greedy, `ignore_eos`) included. {cfg['concurrency']} users at a "
            f"time, each turn after the previous answer and a think time of {cfg['think'][0]:g}-{cfg['think'][1]:g} "
            f"s; the next user in line starts when one finishes (seed {cfg['seed']}, the same users in the same "
            f"order for every system; at most {cfg['max_seconds']:g} s per system). Streamed chat completions, "
            f"each with the OpenAI `user` field and an `X-Session-Id` header naming its user. "
            f"{cfg['engines']} llama-server engines of {cfg['slots']} slot(s), 1 thread each, "
            f"{_host_cache(cfg.get('cache_ram'))}, all on CPU {cfg['engine_cpu']}, started afresh for every system; "
            f"routers and the load generator on CPU {cfg['front_cpu']}."
        ),
        "",
        "## Results",
        "",
        "| system | TTFT p50 (ms) | vs round robin | TTFT p99 (ms) | TTFT p50 first turn / follow-ups (ms) | "
        "ITL p50 (ms) | requests/s | ok / errors / planned | prompt read from cache | router CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rounds = cfg.get("rounds", 1)
    for entry in results.values():
        s = entry.get("summary") or {}
        if s.get("ttft_p50") is None:
            reason = entry.get("unavailable") or entry.get("error") or "no successful request"
            lines.append(f"| {entry['label']} | not available: {one_line(reason)} |" + " |" * 8)
            continue
        ratio = f"{s['ttft_p50'] / base:.2f}x" if base else "—"
        cpu = s.get("front_cpu_share")
        each = s.get("ttft_p50_rounds") or []
        p50 = _num(s["ttft_p50"]) + (f" ({' / '.join(_num(v) for v in each)})" if len(each) > 1 else "")
        lines.append(
            f"| {entry['label']} | {p50} | {ratio} | {_num(s['ttft_p99'])} | "
            f"{_num(s['ttft_p50_first_turn'])} / {_num(s['ttft_p50_follow_up'])} | {_num(s['itl_p50'], 1)} | "
            f"{s['requests_per_s']:.2f} | {s['successful']} / {s['errored']} / {s['planned']} | "
            f"{_pct(s['cached_share'])} | {'—' if cpu is None or entry['kind'] == 'floor' else f'{cpu * 100:.1f}%'} |"
        )
    lines += [
        "",
        "TTFT: from sending the request to the first content token, as the client saw it (queueing at a busy "
        "engine included). ITL: a request's mean time between content tokens after the first, p50 over requests. "
        "requests/s: successful requests over the time from the first sent to the last answered. *prompt read "
        "from cache*: the engines' `timings.cache_n` over all prompt tokens of the measured requests. *router CPU*: "
        "the router's CPU time over the same window, as a share of one core (its own probes and timers included: "
        "at a request or two a second they are most of it)."
        + (
            f" With {rounds} rounds, each system's row is its median round by TTFT p50 (every round's p50 in "
            "brackets, in the order run), and so are the tables below."
            if rounds > 1
            else ""
        ),
        "",
        "## Where the prompts were found",
        "",
        "| system | history cached | system prompt cached | miss | prompt tokens computed per request | "
        "engine prefill p50 (ms) | requests per engine | prompt tokens computed per engine | engine CPU busy | "
        "engine core taken by others |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in results.values():
        s = entry.get("summary") or {}
        if s.get("ttft_p50") is None:
            continue
        o, engines = s["outcomes"], s.get("engines") or []
        lines.append(
            f"| {entry['label']} | {_pct(o['history'])} | {_pct(o['system'])} | {_pct(o['miss'])} | "
            f"{s['computed_tokens_mean']:,.0f} of {s['prompt_tokens_mean']:,.0f} | {_num(s['prefill_ms_p50'])} | "
            + " / ".join(str(e["requests"]) for e in engines)
            + " | "
            + " / ".join(f"{e['computed_tokens']:,}" for e in engines)
            + " | "
            + " / ".join(_pct(e["busy"]) for e in engines)
            + f" | {_pct(s.get('engine_core_others'))} |"
        )
    lines += [
        "",
        "*history cached*: the engine read from its cache every token the user's previous turn had sent (the turn "
        "landed where the conversation was, or where the engine kept it); *system prompt cached*: at least the "
        "system prompt's tokens came from cache; *miss*: less. *engine prefill*: the engine's own `prompt_ms`, "
        "without the queueing. Per engine (engine 1 / 2 / ...): requests counted from the tokens each generated, "
        "prompt tokens from its `llamacpp:prompt_tokens_total`, busy as its CPU time over the measured window. "
        "*engine core taken by others*: the engine core's busy time (`/proc/stat`) less the engines' own, over the "
        "window: other work on this machine, which slows the engines and moves TTFT and requests/s; the cache "
        "columns and the tokens computed move far less with it (only through the order requests interleave in).",
        "",
        "## Where the requests went",
        "",
        "| system | engine known | follow-ups sent to the previous turn's engine | engines per system prompt |",
        "|---|---:|---:|---|",
    ]
    for entry in results.values():
        s = entry.get("summary") or {}
        where = s.get("placement")
        if s.get("ttft_p50") is None or not where:
            continue
        same, follow = where["follow_ups_same_engine"], where["follow_ups"]
        lines.append(
            f"| {entry['label']} | {where['placed']} of {s['successful']} | "
            f"{same} of {follow}{f' ({same / follow:.0%})' if follow else ''} | "
            + " ".join(str(n) for n in where["engines_per_prompt"])
            + " |"
        )
    lines += [
        "",
        "No router says where it sent a request, and an answer does not name its engine: a request's engine is "
        "the one whose log has a prefill of exactly its `timings.prompt_n` tokens in its `timings.prompt_ms` "
        "(*engine known* counts those that match one engine). *engines per system prompt*: for system prompt "
        "0, 1, ..., how many engines its users' requests went to (1: all on one engine).",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|:---:|",
    ]
    for name, measured, met in targets(results):
        lines.append(f"| {name} | {measured} | {'—' if met is None else ('✅' if met else '❌')} |")
    lines += ["", "## Systems and command lines", "", "**engines** (started afresh for each system)", "", "```"]
    lines += [relative(c, run) for c in run["engine_commands"]] + ["```", ""]
    for entry in results.values():
        lines += [f"**{entry['label']}**" + (f" — {entry['notes']}" if entry.get("notes") else ""), ""]
        if entry.get("commands"):
            lines += ["```", *[relative(c, run) for c in entry["commands"]], "```", ""]
        elif entry.get("unavailable"):
            lines += [f"not available: {entry['unavailable']}", ""]
    return "\n".join(lines + environment(run))
