"""The wire contract: every message, codec and name anyserve speaks, in one package.

Fronts (the router's HTTP and gRPC servers, a replica's gRPC agent, the
router link) are thin adapters over what this package defines, as kserve's
``protocol`` package is for its servers:

- :mod:`~anyserve.protocol.names`: every header, metadata key, parameter and
  content type, one constant each;
- :mod:`~anyserve.protocol.messages`: the KServe v2 protobuf messages and stubs;
- :mod:`~anyserve.protocol.metadata`: :class:`RequestMeta`, the capability
  query, delegation marks, deadline, request id and trace context, parsed
  once where a request arrives and carried unchanged to the worker;
- :mod:`~anyserve.protocol.datatypes`: the KServe v2 datatypes and raw packing;
- :mod:`~anyserve.protocol.shapes`: the bound on what a tensor's shape may
  describe, checked by every codec before it builds anything;
- :mod:`~anyserve.protocol.strict_json`: the JSON every front reads and writes
  (no NaN or Infinity in, none out; a refused number names its field);
- :mod:`~anyserve.protocol.v2_json`, :mod:`~anyserve.protocol.v2_client` and
  :mod:`~anyserve.protocol.binary`: KServe v2 REST bodies, JSON and the
  binary tensor extension, as a server reads and writes them and as a
  client does;
- :mod:`~anyserve.protocol.streams`: how a run of stream responses ends or fails.

Nothing outside this package imports ``anyserve._proto``.
"""

from anyserve.protocol import messages, names
from anyserve.protocol.binary import BinaryPart, BinaryWanted, join, parse_header_length
from anyserve.protocol.datatypes import DATATYPES, DataType, TensorError, pack_raw, unpack_raw
from anyserve.protocol.metadata import RequestMeta, new_request_id, query_from_request
from anyserve.protocol.streams import final_error, final_marker, is_final, split_error
from anyserve.protocol.strict_json import dumps, loads_object
from anyserve.protocol.v2_client import parse_response, request_body
from anyserve.protocol.v2_json import metadata_to_json, parse_infer_json, response_to_json

__all__ = [
    "DATATYPES",
    "BinaryPart",
    "BinaryWanted",
    "DataType",
    "RequestMeta",
    "TensorError",
    "dumps",
    "final_error",
    "final_marker",
    "is_final",
    "join",
    "loads_object",
    "messages",
    "metadata_to_json",
    "names",
    "new_request_id",
    "pack_raw",
    "parse_header_length",
    "parse_infer_json",
    "parse_response",
    "query_from_request",
    "request_body",
    "response_to_json",
    "split_error",
    "unpack_raw",
]
