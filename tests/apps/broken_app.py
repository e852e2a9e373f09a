"""An application whose import fails: `anyserve start` must say so."""

raise RuntimeError("this module fails to import on purpose")
