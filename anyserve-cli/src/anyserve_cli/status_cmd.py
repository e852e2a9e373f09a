"""``anyserve status``: what a router or a replica is doing right now.

Given a router URL (``http://...``) it reads ``GET /registry``; given a
replica's ``host:port`` it asks the replica itself (``anyserve.ReplicaStatus``
over the same gRPC port). Both show workers, their state, resources in use,
in-flight requests and recent worker switches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Annotated, Any

import grpc
import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from anyserve.status_client import replica_status


def router_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    response = httpx.get(url.rstrip("/") + "/registry", timeout=timeout)
    response.raise_for_status()
    return response.json()


def _caps(caps: list[Mapping[str, Any]]) -> str:
    return "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c in caps)


def render_replica(console: Console, status: Mapping[str, Any]) -> None:
    console.print(
        Text(f"replica {status.get('replica_id')} at {status.get('endpoint')} "
             f"(transport {status.get('transport')}, {status.get('in_flight', 0)} in flight)", style="bold")
    )  # fmt: skip
    workers = Table(
        "worker", "pid", "alive", "in flight", "capabilities", title="running workers", title_justify="left"
    )
    for w in status.get("workers", []):
        workers.add_row(Text(str(w["id"])), str(w.get("pid")), str(w.get("alive")), str(w.get("in_flight")),
                        Text(_caps(w.get("capabilities", []))))  # fmt: skip
    console.print(workers)
    classes = status.get("worker_classes") or []
    if classes:
        table = Table("worker class", "state", "resources", "idle timeout", "in flight", "waiting", "last error",
                      title="worker classes", title_justify="left")  # fmt: skip
        for c in classes:
            table.add_row(Text(c["worker"]), Text(c["state"]), Text(json.dumps(c.get("resources") or {})),
                          str(c.get("idle_timeout")), str(c.get("in_flight")), str(c.get("waiting")),
                          Text(c.get("last_error") or ""))  # fmt: skip
        console.print(table)
        res = status.get("resources", {})
        console.print(Text(f"resources: budget {res.get('budget') or 'unlimited'}, in use {res.get('in_use')}"))
    switches = status.get("switches") or []
    if switches:
        table = Table("when", "worker", "action", "seconds", "reason", title="recent switches", title_justify="left")
        for s in switches[-10:]:
            when = time.strftime("%H:%M:%S", time.localtime(s["at"]))
            table.add_row(when, Text(s["worker"]), s["action"], f"{s['seconds']:.2f}", Text(s["reason"]))
        console.print(table)


def render_router(console: Console, registry: Mapping[str, Any]) -> None:
    replicas = registry.get("replicas", [])
    table = Table("replica", "endpoint", "healthy", "in flight", "capabilities (state)", title="replicas",
                  title_justify="left")  # fmt: skip
    for r in replicas:
        caps = "; ".join(
            ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("state", "stream"))
            + (" [stream]" if c.get("stream") else "") + f" ({c.get('state', 'hot')})"
            for c in r.get("capabilities", [])
        )  # fmt: skip
        table.add_row(Text(r["replica_id"]), Text(r["endpoint"]), str(r.get("healthy")), str(r.get("in_flight")),
                      Text(caps))  # fmt: skip
    console.print(table)
    for r in replicas:
        if r.get("status"):
            render_replica(console, r["status"])


def status(
    target: Annotated[str, typer.Argument(help="A router URL (http://127.0.0.1:8080) or a replica's host:port.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw status as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 5.0,
) -> None:
    """Show replicas, workers and their state, resources in use, in-flight requests and recent switches."""
    try:
        data = router_status(target, timeout) if "://" in target else replica_status(target, timeout=timeout)
    except (httpx.HTTPError, grpc.RpcError) as exc:
        detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
        typer.echo(f"error: cannot get the status of {target}: {detail}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    console = Console(highlight=False)
    (render_router if "://" in target else render_replica)(console, data)
