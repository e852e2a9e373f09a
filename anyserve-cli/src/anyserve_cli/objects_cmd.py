"""``anyserve objects``: look into and tidy the configured object store.

The store is the one replicas use: ``objects.url`` from ``--config``,
``$ANYSERVE_CONFIG``/``anyserve.toml``, ``ANYSERVE_OBJECT_STORE`` or
``--object-store``, resolved through the installed object backends exactly as
a replica resolves it. References are given as ``fs://<key>`` or as a bare
key. Problems are one ``error:`` line on stderr: exit status 2 for input or
configuration mistakes (unknown scheme, malformed reference), 1 when an
object is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from anyserve.catalog import Catalog
from anyserve.config import Settings, load_settings
from anyserve.errors import AnyServeError, ConfigError, NotFound
from anyserve.objects import ObjectStore, ObjRef, validate_key
from anyserve.plugins import get_plugin_manager
from anyserve_cli.plugin_commands import CliState

#: Bytes copied at a time by ``get``: the object is never held in memory whole.
CHUNK_SIZE = 1 << 20

objects_app = typer.Typer(
    name="objects",
    help="Inspect and manage the configured object store: list, read, remove, collect expired objects.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Configuration file (default: $ANYSERVE_CONFIG, ./anyserve.toml, ./pyproject.toml)."),
]
StoreOption = Annotated[
    str | None,
    typer.Option("--object-store", help="Object store URL, overriding objects.url (e.g. file:///srv/objects)."),
]


def _error(message: str, status: int) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(status)


def _status(exc: BaseException) -> int:
    return 1 if isinstance(exc, NotFound) else 2


@contextmanager
def _reported() -> Iterator[None]:
    """Configuration and object errors as one ``error:`` line and an exit status, never a traceback."""
    try:
        yield
    except ConfigError as exc:
        _error(str(exc), 2)
    except AnyServeError as exc:
        _error(exc.message, _status(exc))
    except OSError as exc:
        _error(f"{exc.filename or 'object store'}: {exc.strerror or exc}", 1)


def _open(ctx: typer.Context, config: Path | None, object_store: str | None) -> tuple[ObjectStore, Settings]:
    state = ctx.find_object(CliState) or CliState(get_plugin_manager())
    settings = load_settings(config, overrides={"objects.url": object_store})
    url, options = settings.objects.url, settings.objects.options
    return Catalog(state.pm).object_backend(url).factory(url, options), settings


def parse_ref(text: str, store: ObjectStore) -> ObjRef:
    """``fs://key`` or a bare key of the configured store (stores validate keys again on use)."""
    if "://" in text:
        return ObjRef.from_string(text)
    return ObjRef(store.backend, validate_key(text))


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _row(ref: ObjRef, now: float) -> dict[str, Any]:
    age = None if ref.created is None else round(now - ref.created, 3)
    return {"ref": str(ref), "key": ref.key, "size": ref.size, "age_seconds": age, "content_type": ref.content_type}


@objects_app.command("ls")
def list_objects(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
    config: ConfigOption = None,
    object_store: StoreOption = None,
) -> None:
    """List every object: key, size in bytes, age (since it was written) and content type."""
    with _reported():
        store, settings = _open(ctx, config, object_store)
        refs = sorted(store.list(), key=lambda r: r.key)
    now = time.time()
    rows = [_row(r, now) for r in refs]
    if as_json:
        document = {"store": settings.objects.url, "backend": store.backend, "objects": rows}
        typer.echo(json.dumps(document, indent=2))
        return
    if not rows:
        typer.echo(f"no objects in {settings.objects.url}")
        return
    table = [("KEY", "SIZE", "AGE", "CONTENT-TYPE")]
    table += [
        (r["key"], "-" if r["size"] is None else str(r["size"]), format_age(r["age_seconds"]), r["content_type"] or "-")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    for key, size, age, content_type in table:
        typer.echo(f"{key:<{widths[0]}}  {size:>{widths[1]}}  {age:>{widths[2]}}  {content_type}")
    total = sum(r["size"] or 0 for r in rows)
    typer.echo(f"{len(rows)} object(s), {total} bytes in {settings.objects.url}")


@objects_app.command("get")
def get_object(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The object: fs://<key> or a bare key.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write to this file instead of stdout ('-' is stdout).")
    ] = None,
    config: ConfigOption = None,
    object_store: StoreOption = None,
) -> None:
    """Write an object's bytes to stdout or a file, streamed a chunk at a time."""
    with _reported():
        store, _ = _open(ctx, config, object_store)
        source = store.open(parse_ref(ref, store))
    with source:
        if output is None or str(output) == "-":
            sys.stdout.flush()
            sink = sys.stdout.buffer
            with _reported():
                shutil.copyfileobj(source, sink, CHUNK_SIZE)
                sink.flush()
            return
        # Into a temp file beside the target, renamed when complete: no half-written FILE.
        partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
        try:
            with _reported(), open(partial, "wb") as sink:
                shutil.copyfileobj(source, sink, CHUNK_SIZE)
            with _reported():
                os.replace(partial, output)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(partial)


@objects_app.command("rm")
def remove_objects(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(help="Objects to remove: fs://<key> or bare keys.")],
    config: ConfigOption = None,
    object_store: StoreOption = None,
) -> None:
    """Remove objects; each missing one is reported and the exit status is 1."""
    with _reported():
        store, _ = _open(ctx, config, object_store)
    status = 0
    for text in refs:
        try:
            ref = parse_ref(text, store)
            removed = store.delete(ref)
        except AnyServeError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            status = max(status, _status(exc))
            continue
        if removed:
            typer.echo(f"removed {ref}")
        else:
            typer.echo(f"error: object {ref} not found", err=True)
            status = max(status, 1)
    if status:
        raise typer.Exit(status)


@objects_app.command("gc")
def collect(
    ctx: typer.Context,
    max_age: Annotated[
        float | None,
        typer.Option(
            "--max-age", min=0, help="Remove objects written longer ago than this (default objects.ttl_seconds)."
        ),
    ] = None,
    config: ConfigOption = None,
    object_store: StoreOption = None,
) -> None:
    """Remove expired objects now, as a replica's background collection does."""
    with _reported():
        store, settings = _open(ctx, config, object_store)
        if max_age is None:
            max_age = settings.objects.ttl_seconds
            if max_age <= 0:
                _error("objects.ttl_seconds is 0 (collection disabled); give --max-age SECONDS", 2)
        removed = store.cleanup(max_age)
    typer.echo(f"removed {removed} object(s) older than {max_age:g}s from {settings.objects.url}")
