"""API keys: what a key and a key id may be, and the line of the key file that holds a
key's digest. The Pulumi program checks keys with these rules and writes the file; the
gateway reads it and checks what callers send (``gateway.api_keys``).

Keys are random strings of at least ``MIN_KEY_LENGTH`` token characters, which nobody can
guess, so one SHA-256 pass is the right hash (stretching is for passwords people choose).
File format, one key per line (``#`` comments and blank lines ignored)::

    <key id> <sha256 hex digest of the key>
"""

from __future__ import annotations

import hashlib
import re

MIN_KEY_LENGTH = 32
# RFC 6750's token characters: a key that works in both headers, from any client (HTTP
# headers are latin-1 to a WSGI server, and a Bearer token has no spaces).
KEY = re.compile(rf"^[A-Za-z0-9._~+/=-]{{{MIN_KEY_LENGTH},}}$")
KEY_RULE = f"at least {MIN_KEY_LENGTH} of the characters A-Z a-z 0-9 . _ ~ + / = -"
KEY_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
KEY_ID_RULE = "1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest(key: str) -> str:
    """The SHA-256 hex digest the key file holds for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_line(key_id: str, key: str) -> str:
    """The key file's line for ``key`` under ``key_id`` (both already checked)."""
    return f"{key_id} {digest(key)}"
