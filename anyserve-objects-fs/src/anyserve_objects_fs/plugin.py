"""Registers the ``fs`` object backend (``file://`` URLs and plain paths).

Every anyserve process imports this module at start-up, so it imports only
core's records: the store itself is imported when the factory first runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from anyserve import hookimpl
from anyserve.records import ObjectBackendSpec

if TYPE_CHECKING:
    from anyserve_objects_fs.store import FileStore


def open_store(url: str, options: Mapping[str, Any]) -> FileStore:
    from anyserve_objects_fs.factory import open_store as _open_store

    return _open_store(url, options)


@hookimpl
def anyserve_register_object_backends(register: Callable[[ObjectBackendSpec], None]) -> None:
    register(
        ObjectBackendSpec(
            name="fs",
            schemes=("file",),
            factory=open_store,
            description="files in a shared directory (file:///dir or a plain path)",
        )
    )
