"""Property tests: whatever bytes arrive, the parser returns a request or a 400, nothing else."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ERRORS
from gateway.failures import Failure
from gateway.request_parsing import parse_json_body

MAX_URLS = 4
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


def _parse(raw: bytes) -> None:
    try:
        result = parse_json_body(raw, MAX_URLS)
    except Failure as exc:
        assert ERRORS[exc.code].status == 400
        assert exc.code == "bad_request"
        assert exc.message
        return
    assert 1 <= len(result.urls) <= MAX_URLS
    assert all(isinstance(u, str) and u and u == u.strip() for u in result.urls)


@given(st.binary(max_size=512))
@settings(max_examples=400)
def test_arbitrary_bytes(raw: bytes) -> None:
    _parse(raw)


@given(json_values)
@settings(max_examples=400)
def test_arbitrary_json(value: object) -> None:
    _parse(json.dumps(value).encode())


@given(st.dictionaries(st.sampled_from(["url", "urls", "x"]), json_values, max_size=3))
@settings(max_examples=400)
def test_objects_with_the_known_keys(value: dict[str, object]) -> None:
    _parse(json.dumps(value).encode())


@given(
    st.lists(st.text(min_size=1).filter(lambda s: s.strip() != ""), min_size=1, max_size=MAX_URLS)
)
def test_valid_batches_round_trip(urls: list[str]) -> None:
    parsed = parse_json_body(json.dumps({"urls": urls}).encode(), MAX_URLS)
    assert parsed.batch
    assert list(parsed.urls) == [u.strip() for u in urls]


@given(st.text(min_size=1).filter(lambda s: s.strip() != ""))
def test_single_url_round_trips(url: str) -> None:
    parsed = parse_json_body(json.dumps({"url": url}).encode(), MAX_URLS)
    assert not parsed.batch
    assert parsed.urls == (url.strip(),)


@given(
    st.text(max_size=300)
    | st.from_regex(r"https?://[\w.\-\[\]:@%]{0,40}(/[\w./%?=&-]{0,40})?", fullmatch=True)
)
@settings(max_examples=500)
def test_url_parser_accepts_or_rejects_cleanly(url: str) -> None:
    from gateway.fetch import MAX_URL_LENGTH, parse_url

    try:
        target = parse_url(url)
    except Failure as exc:
        assert (ERRORS[exc.code].status, exc.code) == (400, "invalid_url")
        return
    assert target.scheme in ("http", "https")
    assert target.host and 0 < target.port < 65536
    assert target.path.startswith("/")
    assert len(url) <= MAX_URL_LENGTH
    assert not any(c.isspace() for c in url)
