"""Server-Sent Events stream encoding for anyserve (encoding name ``sse``).

The plugin module registered through the ``anyserve`` entry-point group is
:mod:`anyserve_encoding_sse.plugin`; :class:`SSEEncoder` is importable here
for code that wants to encode without going through the catalog.
"""

from anyserve_encoding_sse.encoder import SSEEncoder
from anyserve_encoding_sse.version import __version__

__all__ = ["SSEEncoder", "__version__"]
