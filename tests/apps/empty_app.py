"""An application with no handler: `anyserve start` must refuse it."""

from anyserve import AnyServe

app = AnyServe("empty")
