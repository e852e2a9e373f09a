"""anyserve capability plugin: all-MiniLM-L6-v2 sentence embeddings (``type=embed``).

The ``anyserve`` entry point names :mod:`anyserve_capability_minilm.plugin`;
the model itself lives in :mod:`anyserve_capability_minilm.model` and is
loaded on first use, so importing this package stays cheap.
"""

from anyserve_capability_minilm.version import __version__

__all__ = ["__version__"]
