"""The gRPC channel to TF Serving: created lazily, once per process, shared by all threads.

Never inherited across a fork (gunicorn forks workers after loading the config). With a
``dns:///`` target naming a headless Service and the ``round_robin`` policy, every TF
Serving pod gets its own sub-channel and calls are spread per request; the server's max
connection age makes the client re-resolve DNS so new pods join.
"""

from __future__ import annotations

import json
import os
import threading

import grpc

from gateway._proto.tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PredictionStub = prediction_service_pb2_grpc.PredictionServiceStub
ModelStub = model_service_pb2_grpc.ModelServiceStub


def channel_options(lb_policy: str) -> list[tuple[str, object]]:
    service_config = {
        "loadBalancingConfig": [{lb_policy: {}}],
        "methodConfig": [
            {
                # Predict is idempotent: retry a call that never reached a live server,
                # e.g. a pod that went away mid rolling update.
                "name": [{"service": "tensorflow.serving.PredictionService"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
    return [
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Reconnect quickly after the model server comes back.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.dns_min_time_between_resolutions_ms", 2_000),
    ]


class ProcessChannel:
    """The stubs of one channel per process; thread-safe."""

    def __init__(self, target: str, lb_policy: str) -> None:
        self.target = target
        self.lb_policy = lb_policy
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._channel: grpc.Channel | None = None
        self._stubs: tuple[PredictionStub, ModelStub] | None = None

    def stubs(self) -> tuple[PredictionStub, ModelStub]:
        with self._lock:
            if self._channel is None or self._stubs is None or self._pid != os.getpid():
                self._channel = grpc.insecure_channel(
                    self.target, options=channel_options(self.lb_policy)
                )
                self._pid = os.getpid()
                self._stubs = (PredictionStub(self._channel), ModelStub(self._channel))
            return self._stubs

    def close(self) -> None:
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = None
            self._stubs = None
