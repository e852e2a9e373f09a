"""anyserve engine plugin: GGUF chat models on llama.cpp through ``llama-cpp-python`` (``type=chat``).

The ``anyserve`` entry point names :mod:`anyserve_engine_llamacpp.plugin`;
:mod:`anyserve_engine_llamacpp.model` finds and configures the GGUF file and
:mod:`anyserve_engine_llamacpp.engine` holds the worker class and the
generation loop. ``llama_cpp`` is imported only where a model is loaded, so
importing this package stays cheap.
"""

from anyserve_engine_llamacpp.version import __version__

__all__ = ["__version__"]
