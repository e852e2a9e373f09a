"""The heavy replica's app: one capability, ``{type: heavy, gpus: 2}``.

Capabilities are arbitrary key/value attributes: a request for
``{type: heavy}`` matches it, and so does ``{type: heavy, gpus: 2}``;
``{type: heavy, gpus: 8}`` does not. Serve it from this folder with
``anyserve start --app heavy_app:app --port 50052 --api-server http://127.0.0.1:8080 --replica-id heavy-1``.
"""

from __future__ import annotations

from anyserve import AnyServe, ModelInferRequest

app = AnyServe("heavy")


@app.capability(type="heavy", gpus=2)
def heavy(request: ModelInferRequest, context) -> dict[str, int | str]:
    """The sum of squares of the ``numbers`` input (the "heavy" work), and which replica did it."""
    numbers = context.inputs(request).get("numbers", [])
    return {"result": sum(int(n) * int(n) for n in numbers), "served_by": context.replica_id}
