"""The gateway's API keys, from the stack's secret config to the file the gateway reads.

Keys are set one per id, as secrets, so ``Pulumi.<stack>.yaml`` holds them encrypted::

    pulumi config set --secret --path 'clothing-serving:apiKeys.ci' "$(openssl rand -base64 32)"

The program hashes them here: the Kubernetes Secret, and so the cluster and every pod,
only ever hold SHA-256 digests under the key ids (``serving_contract.api_keys``). Two ids valid at
once is how a key is rotated: add the new one, move the clients, remove the old one.
"""

from __future__ import annotations

from typing import Any

from infra.config import ConfigError, stack_file
from infra.project import PROJECT
from serving_contract.api_keys import KEY, KEY_ID, KEY_ID_RULE, KEY_RULE, key_line

CONFIG_KEY = f"{PROJECT}:apiKeys"
HOW_TO_SET = (
    f"pulumi config set --secret --path '{CONFIG_KEY}.<key id>' \"$(openssl rand -base64 32)\""
)


def _error(problem: str) -> ConfigError:
    return ConfigError(f"invalid stack configuration:\n  {problem}")


def key_file_text(raw: Any, *, required: bool, plain: list[str]) -> str | None:
    """The gateway's key file for the decrypted ``apiKeys`` object: one ``<id> <digest>``
    line per key, sorted by id. None when there are no keys and none are required.
    ``plain``: the ids whose key was not set as a secret. ConfigError naming the key
    otherwise; no message ever contains a key."""
    if raw is None or raw == {}:
        if required:
            raise _error(
                f"{CONFIG_KEY}: requireApiKeys is true but there are no keys; add one with: "
                f"{HOW_TO_SET}"
            )
        return None
    if not isinstance(raw, dict):
        raise _error(f"{CONFIG_KEY}: must map key ids to keys, e.g. {HOW_TO_SET}")
    if plain:
        raise _error(
            f"{CONFIG_KEY}.{plain[0]}: the key is in plain text in the stack's config; set it "
            f"again with --secret ({HOW_TO_SET})"
        )
    lines, seen = [], set()
    for key_id, key in sorted(raw.items()):
        where = f"{CONFIG_KEY}.{key_id}"
        if not KEY_ID.match(str(key_id)):
            raise _error(f"{where}: a key id is {KEY_ID_RULE}")
        if not isinstance(key, str) or not KEY.match(key):
            raise _error(
                f"{where}: a key is a random string of {KEY_RULE} (what a Bearer token may "
                'hold), e.g. "$(openssl rand -base64 32)"'
            )
        if key in seen:
            raise _error(f"{where}: the same key as another id; each id needs its own key")
        seen.add(key)
        lines.append(key_line(key_id, key))
    return "\n".join(lines) + "\n"


def plain_key_ids(raw: Any, written: Any, marked_secret: bool) -> list[str]:
    """The ids in ``raw`` whose key is not encrypted. Pulumi marks ``apiKeys`` secret when
    any key in it is, so each key is checked where it is written, ``Pulumi.<stack>.yaml``
    (``written``: ``{secure: ...}`` per key); keys from elsewhere (an ESC environment) go
    by Pulumi's mark on the whole."""
    if not isinstance(raw, dict):
        return []
    if not isinstance(written, dict):
        return [] if marked_secret else sorted(map(str, raw))
    return sorted(
        str(key_id)
        for key_id, value in written.items()
        if not (isinstance(value, dict) and set(value) == {"secure"})
    )


def key_ids(key_file: str | None) -> list[str]:
    """The ids in a key file made by ``key_file_text``."""
    return [line.split(" ", 1)[0] for line in (key_file or "").splitlines()]


def load_key_file(required: bool) -> str | None:
    """``key_file_text`` of the current stack's ``apiKeys``, from Pulumi."""
    import pulumi
    from pulumi.runtime.config import is_config_secret

    try:
        raw = pulumi.Config(PROJECT).get_object("apiKeys")
    except pulumi.ConfigTypeError:
        raise _error(f"{CONFIG_KEY}: not valid JSON/YAML") from None
    try:
        written = stack_file(pulumi.get_stack()).get(CONFIG_KEY)
    except FileNotFoundError:
        written = None
    plain = plain_key_ids(raw, written, is_config_secret(CONFIG_KEY))
    return key_file_text(raw, required=required, plain=plain)
