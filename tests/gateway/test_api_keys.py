"""API keys over real HTTP (gunicorn, two workers): a good key in either header passes, a
bad, missing or malformed one gets the same 401, probes and the page stay open, two keys
work at once and a rotation takes effect without a restart; keys are counted by id and
never written down. The comparison is constant-time by construction, shown by counting
the ``hmac.compare_digest`` calls."""

from __future__ import annotations

import hmac
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.api_keys import KeyDigests, KeyFile, KeyFileError
from gateway.errors import ERRORS
from gateway.guards import presented_key
from gateway.settings import Settings, SettingsError
from serving_contract.api_keys import digest
from tests.gateway.conftest import TEST_ENV
from tests.support.fake_model_server import FakeModel
from tests.support.gateway_process import gunicorn_gateway
from tests.support.image_host import ImageHost

OLD = "old-key-8Zk2pQ7vX1mN4bR6tY9wE3sD5fG0hJ"
NEW = "new-key-Lq3vB8nM2xC7zK5pR1tW9yU4iO6aS0"
RELOAD_S = 0.5


def key_line(key_id: str, key: str) -> str:
    return f"{key_id} {digest(key)}\n"


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text("# rotation in progress\n" + key_line("old", OLD) + key_line("new", NEW))
    return path


@pytest.fixture
def gateway(
    fake_model: tuple[FakeModel, int], keys_file: Path, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    _, port = fake_model
    env = {
        **TEST_ENV,
        "TF_SERVING_HOST": f"127.0.0.1:{port}",
        "API_KEYS_FILE": str(keys_file),
        "API_KEYS_RELOAD_S": str(RELOAD_S),
    }
    log = tmp_path / "gateway.log"
    with gunicorn_gateway(env, workers=2, threads=4, log_path=log) as (base, _):
        yield base, log


def _predict(base: str, url: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(base + "/predict", json={"url": url}, headers=headers, timeout=10)


def test_a_good_key_in_either_header_passes(
    gateway: tuple[str, Path], image_host: ImageHost
) -> None:
    base, _ = gateway
    url = image_host.url("/images/hat.jpg")
    for headers in (
        {"Authorization": f"Bearer {NEW}"},
        {"Authorization": f"bearer   {OLD}"},  # the scheme is case-insensitive
        {"X-API-Key": OLD},
    ):
        response = _predict(base, url, headers)
        assert response.status_code == 200, (headers, response.text)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {NEW[:-1]}"},
        {"Authorization": f"Bearer {NEW}x"},
        {"Authorization": f"Basic {NEW}"},
        {"Authorization": "Bearer"},
        {"X-API-Key": ""},
        {"X-API-Key": digest(NEW)},  # the digest is not the key
    ],
)
def test_anything_else_gets_one_and_the_same_401(
    gateway: tuple[str, Path], image_host: ImageHost, headers: dict[str, str]
) -> None:
    base, _ = gateway
    response = _predict(base, image_host.url("/images/hat.jpg"), headers)
    assert response.status_code == ERRORS["unauthorized"].status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    # the same message whatever was wrong: nothing to learn from it
    assert response.json() == {
        "error": {
            "code": "unauthorized",
            "message": "a valid API key is required: send 'Authorization: Bearer <key>' "
            "or 'X-API-Key'",
        }
    }


def test_probes_the_page_and_the_docs_stay_open(gateway: tuple[str, Path]) -> None:
    base, _ = gateway
    for path in ("/healthz", "/readyz", "/", "/openapi.json"):
        assert requests.get(base + path, timeout=5).status_code == 200, path
    page = requests.get(base + "/", timeout=5).text
    assert 'id="api-key"' in page and 'type="password"' in page


def test_rotation_takes_effect_without_a_restart(
    gateway: tuple[str, Path], keys_file: Path, image_host: ImageHost
) -> None:
    base, _ = gateway
    url = image_host.url("/images/hat.jpg")
    keys_file.write_text(key_line("new", NEW))  # the old key is retired
    deadline = time.monotonic() + 10 * RELOAD_S
    while _predict(base, url, {"X-API-Key": OLD}).status_code != 401:
        assert time.monotonic() < deadline, "the old key still passes"
        time.sleep(RELOAD_S / 5)
    # every worker has dropped it, and the new key passes throughout
    time.sleep(2 * RELOAD_S)
    for _ in range(10):
        assert _predict(base, url, {"X-API-Key": OLD}).status_code == 401
        assert _predict(base, url, {"X-API-Key": NEW}).status_code == 200

    keys_file.write_text("this is not a key file\n")  # a bad update changes nothing
    time.sleep(3 * RELOAD_S)
    assert _predict(base, url, {"X-API-Key": NEW}).status_code == 200


def test_requests_are_counted_by_key_id_and_keys_never_written(
    gateway: tuple[str, Path], image_host: ImageHost
) -> None:
    base, log = gateway
    url = image_host.url("/images/hat.jpg")
    for _ in range(3):
        assert _predict(base, url, {"X-API-Key": NEW}).status_code == 200
    assert _predict(base, url, {"X-API-Key": OLD}).status_code == 200
    assert _predict(base, url, {"X-API-Key": "guess-" + "x" * 30}).status_code == 401
    assert _predict(base, url, {}).status_code == 401
    metrics = requests.get(base + "/metrics", timeout=5).text
    assert 'gateway_api_key_requests_total{key_id="new",status="200"} 3.0' in metrics
    assert 'gateway_api_key_requests_total{key_id="old",status="200"} 1.0' in metrics
    assert 'gateway_api_key_requests_total{key_id="(invalid)",status="401"} 1.0' in metrics
    assert 'gateway_api_key_requests_total{key_id="(none)",status="401"} 1.0' in metrics
    written = log.read_text() + metrics
    assert '"api_key_id": "new"' in written
    for secret in (NEW, OLD, "guess-" + "x" * 30):
        assert secret not in written


def test_the_comparison_does_not_stop_at_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time by construction: every stored digest is compared, with
    hmac.compare_digest, whichever key (if any) matches."""
    digests = KeyDigests.parse(
        "".join(key_line(f"k{i}", f"key-number-{i}-" + "z" * 30) for i in range(5)), "t"
    )
    calls: list[int] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return compare(a, b)

    monkeypatch.setattr("gateway.api_keys.hmac.compare_digest", counting)
    for key, expected in (("key-number-0-" + "z" * 30, "k0"), ("nope", None)):
        calls.clear()
        assert digests.match(key) == expected
        assert len(calls) == 5


def test_headers_are_read_as_documented() -> None:
    from werkzeug.datastructures import Headers

    assert presented_key(Headers({"Authorization": "Bearer abc"})) == "abc"
    assert presented_key(Headers({"X-API-Key": " abc "})) == "abc"
    assert presented_key(Headers({"Authorization": "Bearer a", "X-API-Key": "b"})) == "a"
    assert presented_key(Headers({"Authorization": "Token abc"})) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no keys"),
        ("ci abc\n", "line 1: expected '<key id> <sha256 hex digest>'"),
        (f"CI {digest('x')}\n", "line 1: expected"),
        (f"ci {digest('x')}\nci {digest('y')}\n", "line 2: key id 'ci' appears twice"),
    ],
)
def test_a_bad_key_file_stops_the_gateway_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"API_KEYS_FILE": str(path)})
    assert str(info.value).startswith(f"API_KEYS_FILE: {path}")
    assert message in str(info.value)
    with pytest.raises(SettingsError, match=r"API_KEYS_FILE: .*cannot be read"):
        Settings.from_env({"API_KEYS_FILE": str(tmp_path / "missing")})


def test_a_bad_update_keeps_the_keys_in_force(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(key_line("ci", NEW))
    keys = KeyFile(path, reload_s=0)
    path.write_text("garbage\n")
    assert keys.digests().match(NEW) == "ci"
    path.unlink()
    assert keys.digests().match(NEW) == "ci"
    with pytest.raises(KeyFileError):
        KeyFile.load(path)


def test_the_cli_prints_a_key_file_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.api_keys", "ci"],
        input=NEW + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == key_line("ci", NEW)
    short = subprocess.run(
        [sys.executable, "-m", "gateway.api_keys", "ci"], input="short\n", capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert short.returncode == 2 and "at least 32" in short.stderr
    spaced = subprocess.run(
        [sys.executable, "-m", "gateway.api_keys", "ci"], input="a key with spaces in it, long enough\n",
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert spaced.returncode == 2


def test_no_body_is_read_for_a_caller_without_a_key(gateway: tuple[str, Path]) -> None:
    """The key is checked before the body: an oversized upload without a key is refused
    as unauthorized, not read up to the size cap first."""
    base, _ = gateway
    big = b"\xff\xd8\xff" + b"\x00" * (11 * 1024 * 1024)
    response = requests.post(
        base + "/predict", data=big, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert response.status_code == 401, response.text
    with_key = requests.post(
        base + "/predict",
        data=big,
        headers={"Content-Type": "image/jpeg", "X-API-Key": NEW},
        timeout=30,
    )
    assert with_key.status_code == 413


def test_a_kubernetes_secret_update_is_picked_up(tmp_path: Path) -> None:
    """The kubelet updates a Secret volume by writing a new directory and swapping the
    ``..data`` symlink; the file the gateway reads is a symlink through it."""
    volume = tmp_path / "volume"
    volume.mkdir()
    first, second = volume / "..2026_12_01_a", volume / "..2026_12_01_b"
    first.mkdir()
    (first / "keys").write_text(key_line("old", OLD))
    (volume / "..data").symlink_to(first.name)
    (volume / "keys").symlink_to("..data/keys")
    keys = KeyFile(volume / "keys", reload_s=0)
    assert keys.digests().match(OLD) == "old"

    second.mkdir()
    (second / "keys").write_text(key_line("old", OLD) + key_line("new", NEW))
    (volume / "..data_tmp").symlink_to(second.name)
    (volume / "..data_tmp").rename(volume / "..data")  # the atomic swap
    assert keys.digests().match(NEW) == "new"
    assert keys.digests().match(OLD) == "old"


def test_keys_work_through_the_proxy(gateway: tuple[str, Path], image_host: ImageHost) -> None:
    """As deployed: nginx in front. A key passes, and nginx refuses a request with two
    Authorization headers before the gateway has to choose."""
    from tests.support.proxy import NGINX, nginx_proxy

    if NGINX is None:
        pytest.skip("nginx is not installed (Debian's nginx-light; CI installs it)")
    base, _ = gateway
    url = image_host.url("/images/hat.jpg")
    with nginx_proxy(int(base.rsplit(":", 1)[1])) as proxied:
        assert _predict(proxied, url, {"Authorization": f"Bearer {NEW}"}).status_code == 200
        assert _predict(proxied, url, {"X-API-Key": "nope-" + "n" * 30}).status_code == 401
        import socket

        host, port = proxied.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {NEW}\r\nAuthorization: Bearer {OLD}\r\n".encode()
                + b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
            )
            answer = conn.recv(65536).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 400"), answer[:200]
