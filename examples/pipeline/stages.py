"""A three-stage pipeline whose stages pass data by reference: ingest -> transform -> summarize.

Each stage is its own app, served by its own replica; they share one object
store (``--object-store``) and find each other through the router
(``--api-server``). Only the client's first hop carries the document itself;
every later hop carries an ``fs://`` reference a few dozen bytes long.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re

from anyserve import AnyServe

# -- stage 1: take the document in, store it, pass the reference on ------------------

ingest = AnyServe("ingest")


@ingest.capability(type="ingest")
def ingest_document(request, context):
    text = context.inputs(request)["text"][0]  # str when sent with content_type=str, else bytes
    data = text.encode("utf-8") if isinstance(text, str) else text
    ref = context.objects.create(data, content_type="text/plain; charset=utf-8")
    try:
        result = context.call(capability={"type": "transform"}, inputs={"document": ref})
    finally:
        context.objects.delete(ref)  # done with it; the TTL would collect it anyway
    return result


# -- stage 2: read by reference, write a derived object, pass that on ----------------

transform = AnyServe("transform")


@transform.capability(type="transform")
def normalise(request, context):
    source = context.ref(request, "document")
    text = context.objects.get(source).decode("utf-8")
    words = re.findall(r"[a-z0-9']+", text.lower())
    ref = context.objects.create("\n".join(words).encode(), content_type="text/plain; charset=utf-8")
    try:
        result = context.call(capability={"type": "summarize"}, inputs={"words": ref})
    finally:
        context.objects.delete(ref)
    return result


# -- stage 3: read by reference, answer with a summary -------------------------------

summarize = AnyServe("summarize")


@summarize.capability(type="summarize")
def summarise(request, context):
    ref = context.ref(request, "words")
    sha, counts = hashlib.sha256(), collections.Counter()
    with context.objects.open(ref) as fh:  # a file: large objects need not fit in memory
        for line in fh:
            sha.update(line)
            counts[line.strip().decode()] += 1
    summary = {
        "words": sum(counts.values()),
        "distinct": len(counts),
        "top": counts.most_common(3),
        "sha256_of_words": sha.hexdigest(),
        "summarized_by": context.replica_id,
    }
    return {"summary": json.dumps(summary)}  # one output: a JSON document as text
