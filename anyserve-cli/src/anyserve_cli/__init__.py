"""The ``anyserve`` command line.

The root command is tiny: every sub-command, ``anyserve plugins list``
included, is contributed by a plugin through the ``anyserve_register_commands``
hook, so third-party plugins extend the CLI exactly as anyserve-cli does.
"""

from anyserve_cli.version import __version__

__all__ = ["__version__"]
