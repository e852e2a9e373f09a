"""The KServe v2 messages and service are importable and shaped as upstream."""

import anyserve
from anyserve._proto import grpc_predict_v2_pb2 as pb
from anyserve._proto import grpc_predict_v2_pb2_grpc as pb_grpc


def test_messages_importable_from_anyserve():
    req = anyserve.ModelInferRequest(model_name="echo", id="1")
    tensor = req.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"hi")
    req.parameters["p"].double_param = 0.5
    assert anyserve.ModelInferRequest.FromString(req.SerializeToString()) == req
    stream = anyserve.ModelStreamInferResponse(infer_response=anyserve.ModelInferResponse(id="1"))
    assert stream.infer_response.id == "1" and stream.error_message == ""
    assert anyserve.InferInputTensor is pb.ModelInferRequest.InferInputTensor


def test_service_matches_kserve_and_triton_names():
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    methods = {m.name: m for m in service.methods}
    assert set(methods) == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer", "ModelStreamInfer",
    }  # fmt: skip
    stream = methods["ModelStreamInfer"]
    assert stream.client_streaming and stream.server_streaming  # Triton's bidirectional signature
    assert hasattr(pb_grpc, "GRPCInferenceServiceStub")


def test_field_numbers_follow_upstream():
    fields = {f.name: f.number for f in pb.InferTensorContents.DESCRIPTOR.fields}
    assert fields == {
        "bool_contents": 1, "int_contents": 2, "int64_contents": 3, "uint_contents": 4,
        "uint64_contents": 5, "fp32_contents": 6, "fp64_contents": 7, "bytes_contents": 8,
    }  # fmt: skip
    req = {f.name: f.number for f in pb.ModelInferRequest.DESCRIPTOR.fields}
    assert req == {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "inputs": 5,
        "outputs": 6,
        "raw_input_contents": 7,
    }
    stream = {f.name: f.number for f in pb.ModelStreamInferResponse.DESCRIPTOR.fields}
    assert stream == {"error_message": 1, "infer_response": 2}
