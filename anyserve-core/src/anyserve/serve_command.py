"""``python -m anyserve``: serve an app with nothing but anyserve-core installed.

The ``anyserve`` console script belongs to anyserve-cli, which brings typer,
rich and every other command. A replica needs none of that, so an install of
only ``anyserve-core`` (and ``anyserve-objects-fs``) gets this small
``argparse`` front end to the same runtime: ``start`` resolves settings with
:func:`anyserve.config.load_settings` and runs
:func:`anyserve.replica.server.serve`, exactly as ``anyserve start`` does,
and prints the same ready line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from anyserve import event_loop
from anyserve.errors import ConfigError
from anyserve.version import __version__

if TYPE_CHECKING:
    from anyserve.replica.server import Replica

PROG = "python -m anyserve"
LOG_LEVELS = ("debug", "info", "warning", "error")

DESCRIPTION = (
    "anyserve: a capability-routed serving runtime. This entry point ships with anyserve-core, "
    "so an install without anyserve-cli can still serve an application: "
    f"`{PROG} start --app myapp:app` runs one replica (a KServe v2 gRPC agent and its workers). "
    "The full command line (`anyserve start`, `status`, `router`, `plugins list`, ...) comes with anyserve-cli."
)
EPILOG = (
    "settings not given as flags come from anyserve.toml (or [tool.anyserve] in pyproject.toml) "
    "and ANYSERVE_* environment variables; flags win. "
    f"`{PROG} start --help` lists the start options."
)


def build_parser() -> argparse.ArgumentParser:
    """The parser; a function so tests and ``--help`` see the same thing."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"anyserve-core {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    start = commands.add_parser(
        "start",
        help="start a replica and serve until Ctrl-C or SIGTERM",
        description="Start a replica: serve the app's capabilities over KServe v2 gRPC until Ctrl-C or SIGTERM. "
        "Prints one line with the endpoint once the replica is ready.",
    )
    start.add_argument(
        "--app",
        help="the application, as module:attribute (e.g. myapp:app); "
        "without it, serve what installed capability plugins contribute",
    )
    start.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    start.add_argument("--port", type=int, help="gRPC port (default 50051; 0 picks a free one)")
    start.add_argument("--workers", type=int, help="worker processes (default 1)")
    start.add_argument("--transport", help="IPC transport between agent and workers, e.g. inproc (built in) or unix")
    start.add_argument(
        "--api-server", metavar="URL", help="router URL to register with and delegate to, e.g. http://127.0.0.1:8080"
    )
    start.add_argument("--object-store", metavar="URL", help="object store URL, e.g. file:///srv/objects")
    start.add_argument("--replica-id", help="this replica's id (default generated)")
    start.add_argument("--config", metavar="FILE", help="configuration file (anyserve.toml)")
    start.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="log verbosity (default warning)")
    return parser


def ready_line(replica: Replica) -> str:
    """What is printed once the replica serves: the same words as ``anyserve start``, which tools wait for.

    The router link stays last, right before the ``)``: tools read it as ``router link (\\S+)\\)``.
    """
    link = f", router link {replica.link}" if replica.link else ""
    metrics = f", metrics {replica.metrics_url}" if replica.metrics_url else ""
    return (
        f"anyserve replica {replica.replica_id} ready at {replica.endpoint} "
        f"({replica.supervisor.count} worker(s), transport {replica.assembly.transport.name}{metrics}{link}); "
        "Ctrl-C to stop"
    )


def start(args: argparse.Namespace) -> None:
    """Run one replica until a signal, as ``anyserve start`` does."""
    from anyserve.config import load_settings
    from anyserve.replica.server import serve

    settings = load_settings(
        args.config,
        overrides={
            "replica.host": args.host,
            "replica.port": args.port,
            "replica.workers": args.workers,
            "replica.replica_id": args.replica_id,
            "transport.name": args.transport,
            "router.url": args.api_server,
            "objects.url": args.object_store,
        },
    )
    level = args.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    event_loop.run(serve(settings, args.app, log_level=level, announce=lambda r: print(ready_line(r), flush=True)))


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 after a clean shutdown, 2 for a usage or configuration error (one ``error:`` line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        start(args)
    except ConfigError as exc:  # bad settings, an app that cannot be imported, a taken port: never a traceback
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0
