"""Core's built-in plugins, registered through the same hooks as any other.

See :data:`anyserve.plugins.DEFAULT_PLUGINS` for the list.
"""
