"""Every name anyserve puts on the wire: headers, gRPC metadata keys, parameters, content types.

One constant per name, so no module spells a header or parameter itself.
HTTP header names are written as people read them; the ``*_KEY`` twins are
the lower-case form that gRPC metadata, ASGI's raw headers and the frame
maps of the router link and worker transports carry.
"""

from __future__ import annotations

# -- request metadata (HTTP headers and their gRPC / frame-map keys) ---------------

#: ``X-Capability-<Key>: value`` asks for a capability attribute (``X-Capability-Model-Family`` -> ``model_family``).
CAPABILITY_HEADER = "X-Capability-"
CAPABILITY_KEY = "x-capability-"
#: The replica that handed a request back to the router, and how many times it was handed back.
DELEGATED_FROM_HEADER = "X-Delegated-From"
DELEGATED_FROM_KEY = "x-delegated-from"
DELEGATION_DEPTH_HEADER = "X-Delegation-Depth"
DELEGATION_DEPTH_KEY = "x-delegation-depth"
#: The request's id: taken from the client when it sends one, made up at the first hop otherwise.
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_KEY = "x-request-id"
#: Seconds the request may still take. gRPC carries its own deadline; HTTP and frame maps carry this.
TIMEOUT_HEADER = "X-Request-Timeout"
TIMEOUT_KEY = "x-request-timeout"
#: The official OpenAI SDKs' read timeout in seconds: the deadline of a request that sets no ``X-Request-Timeout``.
OPENAI_TIMEOUT_KEY = "x-stainless-read-timeout"
#: A conversation's id: the routing pipeline's ``session`` scorer keeps requests carrying one on one replica.
SESSION_HEADER = "X-Session-Id"
SESSION_KEY = "x-session-id"
#: W3C trace context, passed through untouched.
TRACEPARENT_KEY = "traceparent"
TRACESTATE_KEY = "tracestate"
#: Agent -> worker only: the index of the handler the agent chose (the worker does not match again).
HANDLER_KEY = "x-anyserve-handler"
#: Agent -> worker only: a liveness probe, answered by the worker's event loop without running a handler.
PROBE_KEY = "x-anyserve-probe"
#: Replica -> router, on every response (gRPC trailing metadata): the replica's load as it answers,
#: ``<queued>,<in_flight>`` (requests waiting for a worker or a free slot, and requests it is serving).
LOAD_KEY = "x-anyserve-load"
#: Response header naming the replica that served a request.
SERVED_BY_HEADER = "X-Served-By"
#: A replica's own secret, sent with its registration, heartbeats and deregistration (see docs/security.md).
REPLICA_KEY_HEADER = "X-Anyserve-Replica-Key"
#: The data plane's API key, the alternative to ``Authorization: Bearer`` that some clients send.
API_KEY_HEADER = "X-Api-Key"

# -- the KServe v2 binary tensor extension ---------------------------------------

#: Length of the JSON part of a body whose binary tensor data follows it.
HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
HEADER_LENGTH_KEY = "inference-header-content-length"
#: Input/output tensor parameter: how many bytes of the binary part are this tensor's.
BINARY_DATA_SIZE = "binary_data_size"
#: Requested-output parameter: answer this output in binary.
BINARY_DATA = "binary_data"
#: Request parameter: answer every output in binary.
BINARY_DATA_OUTPUT = "binary_data_output"

# -- parameters ----------------------------------------------------------------------

#: Request parameters ``capability.<key>`` also ask for a capability attribute.
CAPABILITY_PARAMETER = "capability."
#: Triton's flag on the response that closes one request's run of stream responses.
FINAL_PARAMETER = "triton_final_response"
#: Response parameter naming the replica a delegated request came from.
DELEGATED_PARAMETER = "anyserve.delegated_from"
#: BYTES tensor parameter: the elements are object references (``anyserve.objref``).
OBJREF_PARAMETER = "anyserve.objref"
#: BYTES tensor parameter marking UTF-8 text (MLServer's convention), and its value.
CONTENT_TYPE_PARAMETER = "content_type"
STR_CONTENT_TYPE = "str"
#: BYTES tensor parameter saying a JSON tensor's strings are base64, and its value.
CONTENT_ENCODING_PARAMETER = "content_encoding"
BASE64 = "base64"

# -- the LLM convention (anyserve.llm): tensors and parameters of chat, completion and embed ----

#: Chat input: BYTES [1], a JSON array of OpenAI-style message objects.
MESSAGES_INPUT = "messages"
#: Prompt input (completions, Triton's generate extension) and the texts to embed (BYTES [n]).
TEXT_INPUT = "text_input"
#: Generated text (BYTES [1]): one delta per stream response, the whole text in a unary answer.
TEXT_OUTPUT = "text_output"
#: Why generation ended (BYTES [1], ``stop`` or ``length``), on the last response only.
FINISH_REASON_OUTPUT = "finish_reason"
#: Embeddings: FP32 [n, dimensions], one row per text.
EMBEDDING_OUTPUT = "embedding"
#: Response parameters (INT64) with the engine's token counts, on the last response.
PROMPT_TOKENS_PARAMETER = "prompt_tokens"
COMPLETION_TOKENS_PARAMETER = "completion_tokens"
#: Request parameter: the model name the client asked for (an alias, or the capability's model).
MODEL_PARAMETER = "model"
#: Suffix of a string parameter holding JSON: options that are lists or objects (``stop.json``).
JSON_PARAMETER_SUFFIX = ".json"

# -- content types ---------------------------------------------------------------------

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
OCTET_STREAM = "application/octet-stream"
#: Content types read as a serialised ``ModelInferRequest``; any other body is KServe v2 JSON.
PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf", "application/vnd.google.protobuf", OCTET_STREAM})

# -- gRPC services ------------------------------------------------------------------------

INFERENCE_SERVICE = "inference.GRPCInferenceService"
MODEL_INFER_METHOD = f"/{INFERENCE_SERVICE}/ModelInfer"
MODEL_STREAM_INFER_METHOD = f"/{INFERENCE_SERVICE}/ModelStreamInfer"
MODEL_METADATA_METHOD = f"/{INFERENCE_SERVICE}/ModelMetadata"
#: A small extra service for ``anyserve status``: ``Get`` returns the replica's status as JSON.
STATUS_SERVICE = "anyserve.ReplicaStatus"
