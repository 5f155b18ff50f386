"""The fake model server answers GetModelMetadata as TF Serving does, so a gateway that
stopped asking for ``signature_def``, or tripped over the SavedModel's own
``__saved_model_init_op`` entry, would fail here and not only against the real server
(``get_model_metadata_impl.cc``: the field is required, the whole signature map returns)."""

from __future__ import annotations

import grpc
import pytest

from gateway._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    prediction_service_pb2_grpc,
)
from model_tools.serving_wire import INIT_OP_KEY
from serving_contract.model import SIGNATURE
from tests.support.fake_model_server import FakeModel


def _metadata(port: int, fields: list[str]) -> get_model_metadata_pb2.GetModelMetadataResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
        request.model_spec.name = FakeModel().name
        response: get_model_metadata_pb2.GetModelMetadataResponse = stub.GetModelMetadata(
            request, timeout=5
        )
        return response


def test_metadata_needs_a_field(fake_model: tuple[FakeModel, int]) -> None:
    _, port = fake_model
    with pytest.raises(grpc.RpcError) as caught:
        _metadata(port, [])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must specify at least one metadata_field" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        _metadata(port, ["signature_def", "graph"])
    assert "Metadata field graph is not supported" in caught.value.details()


def test_metadata_returns_the_whole_signature_map(fake_model: tuple[FakeModel, int]) -> None:
    _, port = fake_model
    response = _metadata(port, ["signature_def"])
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sig_map)
    assert set(sig_map.signature_def) == {SIGNATURE, INIT_OP_KEY}
