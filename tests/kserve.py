"""A bare KServe v2 gRPC client for tests that pin the wire behaviour itself."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc

from anyserve.protocol import messages as pb
from anyserve.protocol import messages as pb_grpc


class Wire:
    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(
            endpoint, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        # The same method with no serialisation, to send bytes that are not a valid request.
        self.raw_infer = self.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

    def infer(self, request: pb.ModelInferRequest, capability: dict[str, str] | None = None, timeout: float = 30):
        metadata = [(f"x-capability-{k}", str(v)) for k, v in (capability or {}).items()]
        return self.stub.ModelInfer(request, metadata=metadata, timeout=timeout)

    def stream(
        self, requests: Iterable[pb.ModelInferRequest], capability: dict[str, str] | None = None, timeout: float = 30
    ) -> Iterator[pb.ModelStreamInferResponse]:
        metadata = [(f"x-capability-{k}", str(v)) for k, v in (capability or {}).items()]
        return self.stub.ModelStreamInfer(iter(requests), metadata=metadata, timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def request(model_name: str = "", **inputs: list[int] | list[float] | list[bytes]) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model_name, id="t1")
    for name, values in inputs.items():
        tensor = req.inputs.add(name=name, shape=[len(values)])
        if all(isinstance(v, bytes) for v in values):
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.extend(values)  # type: ignore[arg-type]
        elif all(isinstance(v, float) for v in values):
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.extend(values)  # type: ignore[arg-type]
        else:
            tensor.datatype = "INT64"
            tensor.contents.int64_contents.extend(values)  # type: ignore[arg-type]
    return req


def tokens(responses: Iterable[pb.ModelStreamInferResponse]) -> list[str]:
    out = []
    for response in responses:
        for tensor in response.infer_response.outputs:
            if tensor.name == "text_output":
                out.extend(b.decode() for b in tensor.contents.bytes_contents)
    return out


def output(response: pb.ModelInferResponse, name: str) -> list:
    for tensor in response.outputs:
        if tensor.name == name:
            contents = tensor.contents
            return list(contents.int64_contents or contents.fp64_contents or contents.bytes_contents)
    raise KeyError(name)
