"""The OpenAPI document: paths and schemas from ``openapi.json``, and every error response
from the error registry, so the two cannot disagree."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from gateway.errors import ERRORS
from gateway.failures import Code

# Errors /predict cannot produce (routing errors, and the readiness probe's own).
_NOT_FROM_PREDICT: frozenset[Code] = frozenset({"not_found", "method_not_allowed", "not_ready"})
_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer"},
        "description": "seconds to wait before retrying (model errors)",
    }
}


def _error_responses(codes: list[Code]) -> dict[str, Any]:
    by_status: dict[int, list[Code]] = {}
    for code in codes:
        by_status.setdefault(ERRORS[code].status, []).append(code)
    responses: dict[str, Any] = {}
    for status, group in sorted(by_status.items()):
        response: dict[str, Any] = {
            "description": "; ".join(f"`{c}`: {ERRORS[c].meaning}" for c in sorted(group)),
            "content": copy.deepcopy(_ERROR_REF),
        }
        if status in (503, 504):
            response["headers"] = copy.deepcopy(_RETRY_AFTER)
        responses[str(status)] = response
    return responses


@cache
def _document() -> str:
    text = resources.files("gateway").joinpath("openapi.json").read_text()
    document: dict[str, Any] = json.loads(text)
    paths = document["paths"]
    paths["/predict"]["post"]["responses"].update(
        _error_responses([c for c in ERRORS if c not in _NOT_FROM_PREDICT])
    )
    paths["/readyz"]["get"]["responses"].update(_error_responses(["not_ready"]))
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    error["properties"]["code"]["enum"] = sorted(ERRORS)
    return json.dumps(document)


def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(_document())
    return document
