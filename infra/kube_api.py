"""The Kubernetes API as the commands ``pulumi up`` runs (``infra.rollout_wait``,
``infra.hpa_handover``) call it: the Kubernetes Python client's kubeconfig handling (the
``aws eks get-token`` exec plugin of EKS kubeconfigs included) and transport, with the
API's own JSON and status codes, without the client's typed models (which these commands
do not need, and which take seconds to import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

REQUEST_TIMEOUT_S = 30
# What a call raises when it cannot reach the API (network, credentials, TLS)
UNREACHABLE = (ApiException, HTTPError, OSError)


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    body: bytes


class KubeApi:
    def __init__(self, kubeconfig: dict[str, Any]) -> None:
        self._api = config.new_client_from_config_dict(kubeconfig, persist_config=False)

    def call(self, method: str, path: str, **query: str) -> Answer:
        """``method`` on ``path``, whatever its status (it raises one of ``UNREACHABLE``
        only when no answer came)."""
        request = self._api.param_serialize(
            method,
            path,
            query_params=sorted(query.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(*request, _request_timeout=REQUEST_TIMEOUT_S)
        body = response.read()
        return Answer(response.status, response.reason, body)
