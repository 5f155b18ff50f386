"""The website's files as HTTP serves them: a page that runs under its strict CSP, assets
cached by content, and nothing served from outside its folder. (tests/web drives it in a
real browser.)"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from flask.testing import FlaskClient

from gateway.errors import ERRORS
from tests.gateway.conftest import ClientFactory


class _Page(HTMLParser):
    """What a CSP without 'unsafe-inline' would refuse, and every URL the page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.loads: list[str] = []
        self.data_blocks: dict[str, str] = {}
        self._block: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in attributes:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script" and "src" not in attributes:
            if attributes.get("type") != "application/json":
                self.inline.append("<script> without src")
            self._block = attributes.get("id") or ""
        for name in ("src", "href"):
            value = attributes.get(name)
            if value and not (tag == "a" and name == "href"):
                self.loads.append(value)

    def handle_data(self, data: str) -> None:
        if self._block is not None:
            self.data_blocks[self._block] = data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._block = None


def _page(client: FlaskClient) -> _Page:
    response = client.get("/")
    assert response.status_code == 200
    parsed = _Page()
    parsed.feed(response.text)
    return parsed


def test_the_page_has_a_strict_policy_and_nothing_inline(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.mimetype == "text/html"
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"

    page = _page(client)
    assert page.inline == []
    assert page.loads and all(url.startswith("/static/") for url in page.loads), page.loads


def test_the_page_is_revalidated_and_its_assets_cached_by_content(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.headers["Cache-Control"] == "no-cache"
    assert client.get("/", headers={"If-None-Match": page.headers["ETag"]}).status_code == 304

    for url in _page(client).loads:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable", url
        etag = asset.headers["ETag"]
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
        path = url.split("?", 1)[0]
        for stale in (path, path + "?v=0000000000000000"):  # an old page's link still works
            old = client.get(stale)
            assert old.status_code == 200
            assert old.headers["Cache-Control"] == "no-cache", stale


def test_the_page_says_every_error_in_plain_words(client: FlaskClient) -> None:
    words = json.loads(_page(client).data_blocks["error-words"])
    assert words == {code: kind.plain for code, kind in ERRORS.items()}
    assert all(text.endswith(".") and "_" not in text for text in words.values())


def test_the_page_states_the_configured_size_limit(make_client: ClientFactory) -> None:
    text = make_client(MAX_IMAGE_BYTES=str(2 * 1024 * 1024)).get("/").text
    assert 'data-max-bytes="2097152"' in text
    assert "up to 2 MiB" in text
    assert 'data-max-size="2 MiB"' in text  # what the page says of a file over it


@pytest.mark.parametrize(
    "path",
    [
        "/static/nothing.js",
        "/static/../index.html",  # files that exist, one level up
        "/static/%2e%2e/index.html",
        "/static/..%2findex.html",
        "/static/../../site.py",
        "/static/../../settings.py",
        "/static/./site.js",  # another spelling of an asset
        "/static/site.js/.",
        "/static/x%00.js",
        "/static/" + "a" * 300,  # longer than a file name may be
        "/static/",
    ],
)
def test_only_the_assets_are_served(client: FlaskClient, path: str) -> None:
    """Exactly the asset names, nothing else: no other file, and no other spelling of
    an asset (each would be a new cache entry, or a new path to check)."""
    response = client.get(path)
    assert response.status_code == 404, path
    assert response.json["error"]["code"] == "not_found"


def test_the_website_and_the_api_share_an_origin(client: FlaskClient) -> None:
    """No CORS: the page calls /predict on its own origin, so nothing allows others to."""
    answer = client.post("/predict", json={"url": "x"}, headers={"Origin": "https://elsewhere"})
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert client.options("/predict").headers.get("Access-Control-Allow-Origin") is None
