"""A handler that reports its worker's garbage collector: what ``anyserve.gc_policy`` left it."""

from __future__ import annotations

import gc

from anyserve import AnyServe

app = AnyServe("gc")


@app.capability(type="gc")
def collector(request):
    return {"young": [gc.get_threshold()[0]], "frozen": [gc.get_freeze_count()]}
