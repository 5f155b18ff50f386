"""API keys: who may call ``/predict``.

The gateway never sees a key at rest: it reads SHA-256 digests, each under a key id, from
``API_KEYS_FILE`` (on AWS, a Kubernetes Secret that Pulumi writes from the stack's secret
config). A caller sends ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``
(``gateway.guards`` checks every request that needs one); the key is hashed and its digest
compared with every stored digest by ``hmac.compare_digest``, with no early exit, so the
time taken says nothing about which key came close. What a key and a key id may be, and
the file's lines, are the contract's (``serving_contract.api_keys``).

Kubernetes updates a mounted Secret in place; the file is read again at most every
``API_KEYS_RELOAD_S`` seconds, so a second key can be added, the clients moved to it, and
the first removed, with no restart and no request refused along the way. A changed file
that does not parse is logged and ignored: the keys in force stay in force.

File format, one key per line (``#`` comments and blank lines ignored)::

    <key id> <sha256 hex digest of the key>

``python -m gateway.api_keys <key id>`` reads a key on stdin and prints its line.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from serving_contract.api_keys import DIGEST, KEY, KEY_ID, KEY_RULE, key_line
from serving_contract.gateway_env import API_KEYS_RELOAD_S

log = logging.getLogger(__name__)


class KeyFileError(ValueError):
    """An API key file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class KeyDigests:
    """Key id -> SHA-256 digest, as parsed from a key file."""

    entries: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str, source: str) -> KeyDigests:
        entries: list[tuple[str, bytes]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or not KEY_ID.match(parts[0]) or not DIGEST.match(parts[1]):
                raise KeyFileError(
                    f"{source}, line {number}: expected '<key id> <sha256 hex digest>' with a "
                    "key id of lowercase letters, digits, '-' and '_'"
                )
            if any(parts[0] == known for known, _ in entries):
                raise KeyFileError(f"{source}, line {number}: key id {parts[0]!r} appears twice")
            entries.append((parts[0], bytes.fromhex(parts[1])))
        if not entries:
            raise KeyFileError(f"{source}: no keys (a gateway with a key file refuses everyone)")
        return cls(tuple(entries))

    def match(self, key: str) -> str | None:
        """The id of the key, if it is one of these; constant time in which one, if any."""
        presented = hashlib.sha256(key.encode()).digest()
        found = None
        for key_id, stored in self.entries:
            if hmac.compare_digest(presented, stored):
                found = key_id
        return found

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key_id for key_id, _ in self.entries)


class KeyFile:
    """The digests in a key file, read again when it may have changed."""

    def __init__(self, path: Path, reload_s: float = API_KEYS_RELOAD_S.default) -> None:
        self.path = path
        self.reload_s = reload_s
        self._text = path.read_text()
        self._digests = KeyDigests.parse(self._text, str(path))
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, reload_s: float = API_KEYS_RELOAD_S.default) -> KeyFile:
        """Raises ``KeyFileError`` naming the file when it is missing or malformed."""
        try:
            return cls(path, reload_s)
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot be read ({exc.strerror})") from None

    def digests(self) -> KeyDigests:
        now = time.monotonic()
        if now - self._checked < self.reload_s:
            return self._digests
        with self._lock:
            if now - self._checked >= self.reload_s:
                self._checked = now
                self._reload()
        return self._digests

    def _reload(self) -> None:
        try:
            text = self.path.read_text()
            if text != self._text:
                self._digests = KeyDigests.parse(text, str(self.path))
                self._text = text
                log.info("api keys reloaded", extra={"key_ids": list(self._digests.ids)})
        except (OSError, KeyFileError) as exc:
            log.error("api keys not reloaded; the previous keys stay", extra={"detail": str(exc)})


def main(argv: list[str]) -> int:
    """``python -m gateway.api_keys <key id>``: a key on stdin -> its key file line."""
    if len(argv) != 1 or not KEY_ID.match(argv[0]):
        print("usage: python -m gateway.api_keys <key id> < key", file=sys.stderr)
        return 2
    key = sys.stdin.readline().strip()
    if not KEY.match(key):
        print(f"a key is {KEY_RULE}", file=sys.stderr)
        return 2
    print(key_line(argv[0], key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
