"""``anyserve start``: run one replica (a KServe v2 gRPC agent and its workers)."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from anyserve import event_loop
from anyserve.config import load_settings
from anyserve.replica.server import Replica, serve


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def parse_resources(values: list[str]) -> dict[str, float]:
    """``["gpus=4,mem_gb=80", "cpus=8"]`` -> ``{"gpus": 4.0, "mem_gb": 80.0, "cpus": 8.0}``."""
    budget: dict[str, float] = {}
    for item in (part.strip() for value in values for part in value.split(",")):
        name, sep, amount = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            budget[name.strip()] = float(amount)
        except ValueError:
            raise typer.BadParameter(f"{item!r} is not NAME=NUMBER (e.g. gpus=4)", param_hint="--resources") from None
    return budget


def start(
    app: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="The application, as module:attribute (e.g. myapp:app). "
            "Without it, serve what installed capability plugins contribute.",
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port (default 50051; 0 picks a free one).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1).")] = None,
    transport: Annotated[
        str | None, typer.Option(help="IPC transport between agent and workers, e.g. unix or inproc.")
    ] = None,
    link: Annotated[
        str | None,
        typer.Option(help="Network transport the router reaches this replica by (default tcp; off: gRPC only)."),
    ] = None,
    link_port: Annotated[int | None, typer.Option(help="Port of the router link (default 0: a free one).")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port of the agent's Prometheus /metrics (default 0: a free one; -1: none).")
    ] = None,
    replica_id: Annotated[str | None, typer.Option(help="This replica's id (default generated).")] = None,
    api_server: Annotated[
        str | None, typer.Option(help="Router URL to register with and delegate to, e.g. http://127.0.0.1:8080.")
    ] = None,
    object_store: Annotated[str | None, typer.Option(help="Object store URL, e.g. file:///srv/objects.")] = None,
    max_message_bytes: Annotated[
        int | None, typer.Option(help="Largest request or response in bytes (default 64 MiB).")
    ] = None,
    resources: Annotated[
        list[str] | None,
        typer.Option(
            "--resources",
            help="Resource budget for worker classes, e.g. gpus=4 (repeat or comma-separate: gpus=4,mem_gb=80).",
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Configuration file (anyserve.toml).")] = None,
    log_level: Annotated[LogLevel, typer.Option(help="Log verbosity.")] = LogLevel.warning,
) -> None:
    """Start a replica: serve the app's capabilities over KServe v2 gRPC until Ctrl-C or SIGTERM.

    Prints the endpoint once the replica is ready. In-flight requests get
    replica.shutdown_grace seconds to finish on shutdown.
    """
    settings = load_settings(
        config,
        overrides={
            "replica.host": host,
            "replica.port": port,
            "replica.workers": workers,
            "replica.replica_id": replica_id,
            "replica.max_message_bytes": max_message_bytes,
            "replica.resources": parse_resources(resources) if resources else None,
            "transport.name": transport,
            "link.name": link,
            "replica.link_port": link_port,
            "replica.metrics_port": metrics_port,
            "router.url": api_server,
            "objects.url": object_store,
        },
    )
    level = log_level.value.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def announce(replica: Replica) -> None:
        workers_count = replica.supervisor.count
        typer.echo(
            f"anyserve replica {replica.replica_id} ready at {replica.endpoint} "
            f"({workers_count} worker(s), transport {replica.assembly.transport.name}"
            f"{', metrics ' + replica.metrics_url if replica.metrics_url else ''}"
            f"{', router link ' + replica.link if replica.link else ''}); Ctrl-C to stop"  # link last: tools parse it
        )

    event_loop.run(serve(settings, app, log_level=level, announce=announce))
