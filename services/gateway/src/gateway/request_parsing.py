"""Parsing the body of ``POST /predict`` into a list of URLs (pure, so it can be fuzzed)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.failures import bad_request


@dataclass(frozen=True)
class UrlRequest:
    urls: tuple[str, ...]
    batch: bool  # True for {"urls": [...]}: answer with a list


def parse_json_body(raw: bytes, max_urls: int) -> UrlRequest:
    """``{"url": "..."}`` or ``{"urls": ["...", ...]}``; ``bad_request`` for anything
    else."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request('body must be a JSON object: {"url": "..."} or {"urls": [...]}')
    unknown = sorted(set(body) - {"url", "urls"})
    if unknown:
        raise bad_request(f"unknown field(s) {unknown}; expected 'url' or 'urls'")
    if ("url" in body) == ("urls" in body):
        raise bad_request("give exactly one of 'url' (a string) or 'urls' (a list of strings)")
    if "url" in body:
        url = body["url"]
        if not isinstance(url, str) or not url.strip():
            raise bad_request("'url' must be a non-empty string")
        return UrlRequest((url.strip(),), batch=False)
    urls = body["urls"]
    if not isinstance(urls, list) or not urls:
        raise bad_request("'urls' must be a non-empty list of strings")
    if len(urls) > max_urls:
        raise bad_request(f"'urls' has {len(urls)} items; the limit is {max_urls}")
    for i, item in enumerate(urls):
        if not isinstance(item, str) or not item.strip():
            raise bad_request(f"urls[{i}] must be a non-empty string")
    return UrlRequest(tuple(u.strip() for u in urls), batch=True)
