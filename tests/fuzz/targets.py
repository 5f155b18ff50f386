"""Coverage-guided fuzz targets (atheris, libFuzzer): the gateway's parsers of untrusted
bytes, each with the property it must keep for every input. A target raises (a bug) only
when the property breaks; the errors the gateway answers with are the expected outcome.

- ``decode``: image bytes -> (24, 32, 3) uint8 pixels, or a decoding failure (the 413,
  415 and 422 codes).
- ``url``: a client's URL -> a target whose host and path are safe to put in an HTTP
  request line and Host header (ASCII, no whitespace, no delimiters), or invalid_url.
- ``body``: a JSON request body -> 1..MAX_URLS URLs, or bad_request.
- ``predict_response``: the bytes of a TF Serving Predict answer -> scores of the request's
  shape with unique labels, or model_error (a model server is trusted less than code).
"""

from __future__ import annotations

import string
from collections.abc import Callable

import numpy as np
from google.protobuf.message import DecodeError

from gateway._proto.tensorflow_serving.apis import predict_pb2
from gateway.failures import Failure
from gateway.fetch import parse_url
from gateway.imaging import Decoder
from gateway.model_client import read_prediction
from gateway.request_parsing import parse_json_body
from gateway.signature import ServingSignature

# 1 Mpx: the memory plan is measured in tests/gateway/test_memory.py; here the point is
# many inputs per second.
DECODER = Decoder(max_pixels=1_000_000)
DECODE_ERRORS = {"unsupported_media_type", "image_too_large", "undecodable_image"}
SIZE = (24, 32)


def decode(data: bytes) -> None:
    try:
        pixels = DECODER(data, SIZE)
    except Failure as exc:
        assert exc.code in DECODE_ERRORS, exc.code
        return
    assert pixels.shape == (*SIZE, 3) and pixels.dtype == np.uint8, pixels.shape


# What may appear in a host or path once parsed: nothing that ends or splits a request line
# or a header (space, CR, LF, control characters) and, in a host, no URL delimiter.
_HOST_CHARS = set(string.ascii_letters + string.digits + "-._:")  # ':' in IPv6 literals
_PATH_CHARS = set(map(chr, range(0x21, 0x7F))) - {"#"}


def url(data: bytes) -> None:
    text = data.decode("utf-8", errors="surrogateescape")  # invalid bytes: lone surrogates
    try:
        target = parse_url(text)
    except Failure as exc:
        assert exc.code == "invalid_url", exc.code
        return
    assert target.scheme in ("http", "https")
    assert target.host and set(target.host) <= _HOST_CHARS, target.host
    assert 0 < target.port < 65536
    assert target.path.startswith("/") and set(target.path) <= _PATH_CHARS, target.path
    assert set(target.host_header) <= _HOST_CHARS | {"[", "]"}, target.host_header


MAX_URLS = 4


def body(data: bytes) -> None:
    try:
        request = parse_json_body(data, MAX_URLS)
    except Failure as exc:
        assert exc.code == "bad_request", exc.code
        return
    assert 1 <= len(request.urls) <= MAX_URLS


SIGNATURE = ServingSignature(
    input_name="image", input_dtype="uint8", height=299, width=299, preprocessing=None,
    score_output="logits", activation="softmax", classes_output="classes", class_count=None,
)  # fmt: skip
LABELS = ("a", "b", "c")


def predict_response(data: bytes) -> None:
    try:
        response = predict_pb2.PredictResponse.FromString(data)
    except DecodeError:
        return  # gRPC refuses a message that does not parse before the gateway sees it
    for signature in (
        SIGNATURE,
        SIGNATURE.__class__(**{**vars(SIGNATURE), "classes_output": None}),
    ):
        try:
            prediction = read_prediction(response, signature, LABELS, batch_size=2)
        except Failure as exc:
            assert exc.code == "model_error", exc.code
            continue
        assert prediction.scores.shape == (2, len(prediction.labels))
        assert len(set(prediction.labels)) == len(prediction.labels)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "decode": decode,
    "url": url,
    "body": body,
    "predict_response": predict_response,
}
