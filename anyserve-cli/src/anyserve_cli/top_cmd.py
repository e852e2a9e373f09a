"""``anyserve top``: the cluster as the router sees it, redrawn in place every few seconds.

Replicas, what they offer and their in-flight requests come from the
router's ``GET /registry``; request and error rates, latency and
time-to-first-token percentiles per capability from two scrapes of its
``GET /metrics`` (:mod:`anyserve_cli.top_metrics`). Both are asked with the
admin token (configured, or the state directory's, as ``anyserve engine``
finds it): ``/metrics`` needs it, and ``/registry`` accepts it where API
keys are configured. A router that serves no ``/metrics``, or refuses the
token, still gets its registry shown, with a line saying why metrics are
missing.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from anyserve.config import load_settings
from anyserve.credentials import Credentials, bearer
from anyserve_cli import top_metrics as tm

DEFAULT_ROUTER = "http://127.0.0.1:8080"
#: ANSI: clear the screen, cursor home.
CLEAR = "\x1b[2J\x1b[H"
#: Seconds one HTTP call to the router may take.
TIMEOUT = 5.0
#: Most capabilities a frame lists (the busiest first).
MAX_ROWS = 40
#: Largest answer read from the router, in bytes (a /metrics of thousands of series is a few MiB).
MAX_BODY = 64 * 1024 * 1024


class TooLarge(Exception):
    """The router answered more than :data:`MAX_BODY` bytes."""


@dataclass
class Frame:
    """What one redraw shows: the registry (or why not), and a window of metrics (or why not)."""

    url: str
    registry: Mapping[str, Any] | None
    registry_error: str | None
    window: tm.Window | None
    metrics_error: str | None


class Source:
    """The router being watched: its URL, the admin token's header, the last scrape."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=TIMEOUT, headers=headers)
        self.last: tm.Scrape | None = None

    def close(self) -> None:
        self.client.close()

    def _get(self, path: str) -> tuple[int, bytes]:
        """Status and body of ``GET path``; a body past :data:`MAX_BODY` bytes is refused, not held."""
        with self.client.stream("GET", self.url + path) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY:
                    raise TooLarge(f"GET {path} answered more than {MAX_BODY} bytes")
            return response.status_code, bytes(body)

    def registry(self) -> tuple[Mapping[str, Any] | None, str | None]:
        try:
            status, body = self._get("/registry")
        except httpx.HTTPError as exc:
            return None, f"cannot reach the router at {self.url}: {exc}"
        except TooLarge as exc:
            return None, str(exc)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if status != 200 or not isinstance(data, dict):
            detail = data.get("error") if isinstance(data, dict) else body[:200].decode(errors="replace")
            return None, f"GET /registry answered {status}: {detail}"
        return data, None

    def scrape(self) -> tuple[tm.Window | None, str | None]:
        """A window from the previous scrape to this one (the first: since the router started)."""
        try:
            status, body = self._get("/metrics")
        except httpx.HTTPError as exc:
            return None, f"metrics unavailable: {exc}"
        except TooLarge as exc:
            return None, f"metrics unavailable: {exc}"
        if status == 404:
            return None, "metrics unavailable: this router serves no /metrics"
        if status in (401, 403):
            return None, f"metrics unavailable: /metrics refused the admin token ({status})"
        if status != 200:
            return None, f"metrics unavailable: GET /metrics answered {status}"
        try:
            now = tm.Scrape.parse(body.decode(errors="replace"), time.monotonic())
        except ValueError as exc:
            return None, f"metrics unavailable: cannot parse /metrics: {exc}"
        window = tm.Window(self.last, now)
        self.last = now
        return window, None

    def frame(self) -> Frame:
        registry, registry_error = self.registry()
        window, metrics_error = self.scrape()
        return Frame(self.url, registry, registry_error, window, metrics_error)


def _offers(capabilities: list[Mapping[str, Any]]) -> str:
    """A replica's offers, compact: one entry per capability (its unary and stream offers together, ``+stream``
    or ``stream`` only), its state shown when it is not ``hot``."""
    shown: dict[str, list[Any]] = {}  # label -> [unary?, stream?, states]
    for capability in capabilities:
        label = ",".join(f"{k}={v}" for k, v in capability.items() if k not in ("state", "stream"))
        entry = shown.setdefault(label, [False, False, set()])
        entry[1 if capability.get("stream") else 0] = True
        entry[2].add(capability.get("state", "hot"))
    parts = []
    for label, (unary, stream, states) in shown.items():
        kind = ("+stream" if unary else " stream only") if stream else ""
        cold = sorted(states - {"hot"})
        parts.append(label + kind + (f" ({'/'.join(cold)})" if cold else ""))
    return "; ".join(parts)


def _ms(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f}" if seconds >= 0.01 else f"{seconds * 1000:.2f}"


def _per_second(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(console: Console, frame: Frame) -> None:
    """One frame: a header, the replicas, then the router's traffic per capability."""
    console.print(Text(f"anyserve top  {frame.url}  {time.strftime('%H:%M:%S')}", style="bold"))
    _render_replicas(console, frame)
    if frame.window is None:
        console.print(Text(frame.metrics_error or "metrics unavailable", style="yellow"))
        return
    _render_traffic(console, frame.window)


def _render_replicas(console: Console, frame: Frame) -> None:
    if frame.registry is None:
        console.print(Text(frame.registry_error or "registry unavailable", style="red"))
        return
    replicas = frame.registry.get("replicas", [])
    table = Table("replica", "endpoint", "healthy", "in flight", "capabilities (state when not hot)",
                  title=f"replicas ({len(replicas)})", title_justify="left")  # fmt: skip
    for replica in replicas:
        healthy = replica.get("healthy")
        table.add_row(
            Text(str(replica.get("replica_id"))),
            Text(str(replica.get("endpoint"))),
            Text(str(healthy), style="green" if healthy else "red"),
            str(replica.get("in_flight", 0)),
            Text(_offers(replica.get("capabilities", []))),
        )
    console.print(table)


def _render_traffic(console: Console, window: tm.Window) -> None:
    now = window.after
    in_flight = {
        front: now.total(tm.IN_FLIGHT, front=front) for front in sorted(now.label_values(tm.IN_FLIGHT, "front"))
    }
    (decision_p99,), _ = window.quantiles(tm.DECISION, (0.99,))
    summary = (
        f"router: {now.total(tm.REPLICAS):.0f} replicas, {now.total(tm.CAPABILITIES):.0f} capabilities, in flight "
        + (", ".join(f"{front} {count:.0f}" for front, count in in_flight.items()) or "0")
        + f"; delegations/s {_per_second(window.rate(tm.DELEGATIONS))}; routing decision p99 {_ms(decision_p99)} ms"
    )
    console.print(Text(summary))
    capabilities = now.label_values(tm.REQUESTS, "capability")
    totals = {cap: now.total(tm.REQUESTS, capability=cap) for cap in capabilities}
    table = Table("capability", "req/s", "err/s", "requests", "p50 ms", "p99 ms", "TTFT p50", "TTFT p99",
                  "tok/s in", "tok/s out", title="traffic by capability", title_justify="left")  # fmt: skip
    table.columns[0].overflow = "fold"  # a long label wraps, never cut
    stale = False
    for cap in sorted(capabilities, key=lambda c: -totals[c])[:MAX_ROWS]:
        match = (("capability", cap),)
        (p50, p99), fresh = window.quantiles(tm.DURATION, (0.5, 0.99), capability=cap)
        (t50, t99), fresh_ttft = window.quantiles(tm.TTFT, (0.5, 0.99), capability=cap)
        stale = stale or not fresh or (t50 is not None and not fresh_ttft)
        errors = window.rate(tm.REQUESTS, match, errors_only=True)
        table.add_row(
            Text(cap),
            _per_second(window.rate(tm.REQUESTS, match)),
            Text(_per_second(errors), style="red" if errors else ""),
            f"{totals[cap]:.0f}",
            _ms(p50) + ("" if fresh else "*"),
            _ms(p99) + ("" if fresh else "*"),
            _ms(t50) + ("" if fresh_ttft or t50 is None else "*"),
            _ms(t99) + ("" if fresh_ttft or t99 is None else "*"),
            _per_second(window.rate(tm.PROMPT_TOKENS, match)),
            _per_second(window.rate(tm.GENERATION_TOKENS, match)),
        )
    console.print(table)
    notes = []
    if window.seconds is None:
        notes.append("rates need two scrapes: shown from the next frame")
    else:
        notes.append(f"rates over the last {window.seconds:.1f}s")
    if stale:
        notes.append("* no requests in that time: since the router started")
    console.print(Text("; ".join(notes), style="dim"))


def draw(frame: Frame, *, color: bool, tty: bool) -> str:
    """The frame as text: styled for a colour terminal, plain otherwise."""
    out = io.StringIO()
    width = shutil.get_terminal_size((160, 40)).columns  # $COLUMNS first, as for any terminal program
    console = Console(file=out, width=width, highlight=False, force_terminal=tty and color, no_color=not color,
                      color_system="standard" if tty and color else None)  # fmt: skip
    render(console, frame)
    return out.getvalue()


def top(
    router: Annotated[
        str | None, typer.Option("--router", help="The router's URL (default: router.url, else 127.0.0.1:8080).")
    ] = None,
    interval: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds between refreshes (and between the two scrapes of --once)."),
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colours.")] = False,
) -> None:
    """A live view of the cluster: replicas, their capabilities and in-flight requests; request and error
    rates, p50/p99 latency and time to first token by capability (from the router's /metrics)."""
    settings = load_settings()
    url = router or settings.router.url or DEFAULT_ROUTER
    source = Source(url, bearer(Credentials.load(settings).admin))
    tty = sys.stdout.isatty()
    color = not no_color
    try:
        if once:
            source.scrape()  # the first scrape: rates are from the difference with the second
            time.sleep(interval)
            frame = source.frame()
            sys.stdout.write(draw(frame, color=color, tty=tty))
            if frame.registry is None:
                raise typer.Exit(1)
            return
        while True:
            text = draw(source.frame(), color=color, tty=tty)
            sys.stdout.write(CLEAR + text if tty else text + "\n")
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        source.close()
