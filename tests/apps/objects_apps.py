"""Apps for object-system tests: replicas that pass data to each other by reference.

``producer`` stores what it is sent and hands the reference to capability
``digest`` through the router; ``consumer`` resolves the reference from the
shared store and answers with the object's length and sha256. ``store`` makes
and reads single objects for the TTL tests.
"""

from __future__ import annotations

import hashlib

from anyserve import AnyServe, ModelInferResponse, ObjRef


def _reply(request, **outputs) -> ModelInferResponse:
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    for name, value in outputs.items():
        if isinstance(value, int):
            out = response.outputs.add(name=name, datatype="INT64", shape=[1])
            out.contents.int64_contents.append(value)
        else:
            out = response.outputs.add(name=name, datatype="BYTES", shape=[1])
            out.parameters["content_type"].string_param = "str"
            out.contents.bytes_contents.append(str(value).encode())
    return response


producer = AnyServe("producer")


@producer.capability(type="produce")
def produce(request, context):
    """Store the input bytes, send only the reference on, return the consumer's answer."""
    inputs = context.inputs(request)
    size = inputs["size"][0] if "size" in inputs else None
    data = bytes(range(256)) * (size // 256) if size is not None else inputs["payload"][0]
    ref = context.objects.create(data, content_type="application/octet-stream")
    try:
        return context.call(capability={"type": "digest"}, inputs={"data": ref})
    finally:
        if "keep" not in inputs:
            context.objects.delete(ref)


@producer.capability(type="produce-param")
def produce_param(request, context):
    """The same, with the reference travelling as a request parameter."""
    ref = context.objects.create(context.inputs(request)["payload"][0])
    return context.call(capability={"type": "digest"}, inputs={}, parameters={"data": ref})


consumer = AnyServe("consumer")


@consumer.capability(type="digest")
def digest(request, context):
    ref = context.ref(request, "data")
    with context.objects.open(ref) as fh:
        sha, length = hashlib.sha256(), 0
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            length += len(chunk)
    return _reply(request, length=length, sha256=sha.hexdigest(), ref=str(ref), replica=context.replica_id)


store = AnyServe("store")


@store.capability(type="make")
def make(request, context):
    ref = context.objects.create(context.inputs(request)["payload"][0])
    return _reply(request, ref=str(ref))


@store.capability(type="read")
def read(request, context):
    """Reads the ``ref`` input (a reference tensor, or a plain string for a ref sent as text)."""
    value = context.inputs(request)["ref"][0]
    ref = value if isinstance(value, ObjRef) else ObjRef.from_string(value)
    return _reply(request, length=len(context.objects.get(ref)))


@store.capability(type="unpickle")
def unpickle(request, context):
    """Never opts in: whatever a caller stored, this handler refuses to unpickle it."""
    from anyserve.objects import loads_pickle

    return _reply(request, value=repr(loads_pickle(context.objects.get(context.ref(request, "ref")))))
