"""anyserve's ``fs`` object backend: objects as files in a directory shared by every process.

Installing the distribution is enough: the ``anyserve`` entry point registers
the backend for ``file://`` URLs and plain paths. Use :class:`FileStore`
directly only outside a replica (scripts, tests)::

    from anyserve_objects_fs import FileStore

    store = FileStore("/srv/anyserve/objects")
    ref = store.create(b"...", key="stage1/output.bin")

Attributes load lazily so that importing the plugin module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anyserve_objects_fs.version import __version__

if TYPE_CHECKING:
    from anyserve_objects_fs.factory import open_store
    from anyserve_objects_fs.store import FileStore

__all__ = ["FileStore", "__version__", "open_store"]


def __getattr__(name: str) -> Any:
    if name == "FileStore":
        from anyserve_objects_fs.store import FileStore

        return FileStore
    if name == "open_store":
        from anyserve_objects_fs.factory import open_store

        return open_store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
