"""Gateway settings: one typed object, read from the environment and validated up front.

Nothing here describes a particular model: the served model's signature says what it
takes and returns (``gateway.signature``). The model settings below exist to point at a
model and, rarely, to override what its signature says.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from gateway.api_keys import KeyFile, KeyFileError
from gateway.decode_memory import container_memory_limit
from gateway.fetch import FetchLimits
from gateway.imaging import FILTERS
from gateway.netguard import AccessPolicy
from serving_contract.gateway_env import (
    API_KEYS_FILE,
    API_KEYS_RELOAD_S,
    BODY_OVERHEAD_BYTES,
    CLASS_LABELS,
    CONNECT_TIMEOUT_S,
    DECODE_MEMORY_MIB,
    DECODE_WAIT_S,
    DOWNLOAD_THREADS,
    DOWNLOAD_TIMEOUT_S,
    EXIF_TRANSPOSE,
    FETCH_ALLOW,
    GRPC_LB_POLICY,
    GUNICORN_THREADS,
    HSTS_MAX_AGE_S,
    IMAGE_SIZE,
    LB_POLICIES,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_REDIRECTS,
    MAX_URLS,
    MIB,
    MODEL_INPUT_NAME,
    MODEL_METADATA_TTL_S,
    MODEL_NAME,
    MODEL_OUTPUT_NAME,
    MODEL_SIGNATURE,
    MODEL_TIMEOUT_S,
    MODEL_VERSION,
    MODEL_WAKE_ESTIMATE_S,
    OUTPUT_ACTIVATION,
    PREPROCESSING,
    READ_TIMEOUT_S,
    RESIZE_FILTER,
    RETRY_AFTER_S,
    TF_SERVING_HOST,
    USER_AGENT,
    WEB_CONCURRENCY,
    DecodeSizing,
    Var,
    image_peak_bytes,
)
from serving_contract.model import PREPROCESSING_MODES

ACTIVATIONS = ("softmax", "none")
# Without a container memory limit, a worker decodes this many images at the cap at once.
UNLIMITED_DECODES = 2


class SettingsError(ValueError):
    """A setting has a value the gateway cannot run with; the message names the variable."""


@dataclass(frozen=True)
class ModelSettings:
    """Which model to call, and how long to wait for it. The overrides (None/empty: take
    it from the model's signature) exist for models not exported by ``model_tools``."""

    target: str = TF_SERVING_HOST.default
    lb_policy: str = GRPC_LB_POLICY.default
    name: str = MODEL_NAME.default
    version: int | None = MODEL_VERSION.default
    signature_name: str = MODEL_SIGNATURE.default
    timeout_s: float = MODEL_TIMEOUT_S.default
    metadata_ttl_s: float = MODEL_METADATA_TTL_S.default
    retry_after_s: int = RETRY_AFTER_S.default
    # 0: the model server never sleeps; else its first estimate of a wake (gateway.waking)
    wake_estimate_s: int = MODEL_WAKE_ESTIMATE_S.default
    # overrides of the signature
    input_name: str | None = MODEL_INPUT_NAME.default
    output_name: str | None = MODEL_OUTPUT_NAME.default
    class_labels: tuple[str, ...] = CLASS_LABELS.default
    output_activation: str | None = OUTPUT_ACTIVATION.default
    image_size: tuple[int, int] | None = IMAGE_SIZE.default
    preprocessing: str | None = PREPROCESSING.default


@dataclass(frozen=True)
class ImageSettings:
    """Decoding: the size and the normalisation come from the model's signature."""

    resize_filter: str = RESIZE_FILTER.default
    exif_transpose: bool = EXIF_TRANSPOSE.default
    max_pixels: int = MAX_IMAGE_PIXELS.default


@dataclass(frozen=True)
class ServerSettings:
    """gunicorn's worker processes and threads per worker (gunicorn_conf takes them from
    here; the memory budget below depends on them)."""

    workers: int = WEB_CONCURRENCY.default
    threads: int = GUNICORN_THREADS.default


@dataclass(frozen=True)
class DecodeMemory:
    """Each worker's budget for the images it decodes at once (``gateway.decode_memory``)
    and how long a decode waits for its share before ``decoder_busy``."""

    budget_bytes: int = UNLIMITED_DECODES * image_peak_bytes(MAX_IMAGE_PIXELS.default)
    wait_s: float = DECODE_WAIT_S.default
    source: str = "default: two images at the pixel cap (no container memory limit)"


@dataclass(frozen=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    image: ImageSettings = field(default_factory=ImageSettings)
    fetch: FetchLimits = field(default_factory=FetchLimits)
    fetch_policy: AccessPolicy = field(
        default_factory=partial(AccessPolicy.parse, FETCH_ALLOW.default)
    )
    server: ServerSettings = field(default_factory=ServerSettings)
    decode_memory: DecodeMemory = field(default_factory=DecodeMemory)
    max_urls: int = MAX_URLS.default
    download_threads: int = DOWNLOAD_THREADS.default
    # the file of SHA-256 digests of the API keys /predict accepts (gateway.api_keys);
    # None: no keys
    api_keys_file: str | None = API_KEYS_FILE.default
    api_keys_reload_s: float = API_KEYS_RELOAD_S.default  # how soon a changed file counts
    # Strict-Transport-Security on every answer, when TLS ends at the load balancer in front
    hsts_max_age_s: int = HSTS_MAX_AGE_S.default

    @property
    def max_request_bytes(self) -> int:
        """Upper bound of a request body: one image plus multipart/JSON overhead."""
        return self.fetch.max_bytes + BODY_OVERHEAD_BYTES

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        memory_limit: Callable[[], int | None] = container_memory_limit,
    ) -> Settings:
        """Build settings from environment variables (``serving_contract.gateway_env``
        names them and their defaults; the gateway README says what they mean);
        ``memory_limit`` gives the container's memory limit in bytes, if it has one."""
        r = _Reader(os.environ if env is None else env)
        labels = r.csv(CLASS_LABELS)
        if len(set(labels)) != len(labels):
            raise SettingsError(f"{CLASS_LABELS.name}: labels must be unique, got {list(labels)}")
        model = ModelSettings(
            target=r.text(TF_SERVING_HOST),
            lb_policy=r.choice(GRPC_LB_POLICY, LB_POLICIES),
            name=r.text(MODEL_NAME),
            version=r.optional_int(MODEL_VERSION),
            signature_name=r.text(MODEL_SIGNATURE),
            timeout_s=r.positive_float(MODEL_TIMEOUT_S),
            metadata_ttl_s=r.positive_float(MODEL_METADATA_TTL_S),
            retry_after_s=r.positive_int(RETRY_AFTER_S),
            wake_estimate_s=r.non_negative_int(MODEL_WAKE_ESTIMATE_S),
            input_name=r.optional_text(MODEL_INPUT_NAME),
            output_name=r.optional_text(MODEL_OUTPUT_NAME),
            class_labels=labels,
            output_activation=r.optional_choice(OUTPUT_ACTIVATION, ACTIVATIONS),
            image_size=r.size(IMAGE_SIZE),
            preprocessing=r.optional_choice(PREPROCESSING, PREPROCESSING_MODES),
        )
        image = ImageSettings(
            resize_filter=r.choice(RESIZE_FILTER, tuple(FILTERS)),
            exif_transpose=r.boolean(EXIF_TRANSPOSE),
            max_pixels=r.positive_int(MAX_IMAGE_PIXELS),
        )
        fetch = FetchLimits(
            max_bytes=r.positive_int(MAX_IMAGE_BYTES),
            connect_timeout_s=r.positive_float(CONNECT_TIMEOUT_S),
            read_timeout_s=r.positive_float(READ_TIMEOUT_S),
            total_timeout_s=r.positive_float(DOWNLOAD_TIMEOUT_S),
            max_redirects=r.non_negative_int(MAX_REDIRECTS),
            user_agent=r.text(USER_AGENT),
        )
        server = ServerSettings(
            workers=r.positive_int(WEB_CONCURRENCY), threads=r.positive_int(GUNICORN_THREADS)
        )
        download_threads = r.positive_int(DOWNLOAD_THREADS)
        return cls(
            model=model,
            image=image,
            fetch=fetch,
            fetch_policy=r.policy(FETCH_ALLOW),
            server=server,
            decode_memory=_decode_memory(
                r, image.max_pixels, fetch.max_bytes, server, download_threads, memory_limit
            ),
            max_urls=r.positive_int(MAX_URLS),
            download_threads=download_threads,
            api_keys_file=r.key_file(API_KEYS_FILE),
            api_keys_reload_s=r.positive_float(API_KEYS_RELOAD_S),
            hsts_max_age_s=r.non_negative_int(HSTS_MAX_AGE_S),
        )


def _decode_memory(
    r: _Reader,
    max_pixels: int,
    max_image_bytes: int,
    server: ServerSettings,
    download_threads: int,
    memory_limit: Callable[[], int | None],
) -> DecodeMemory:
    """DECODE_MEMORY_MIB, else the container's limit shared out, else two images at the
    cap; never less than one image at the cap (that would refuse images the limits allow)."""
    sizing = DecodeSizing(
        server.workers, server.threads, download_threads, max_image_bytes, max_pixels
    )
    need = sizing.one_image_bytes
    one_image = f"one image at {MAX_IMAGE_PIXELS.name}={max_pixels} needs {-(-need // MIB)} MiB"
    wait_s = r.positive_float(DECODE_WAIT_S)
    explicit = r.optional_int(DECODE_MEMORY_MIB)
    if explicit is not None:
        if explicit * MIB < need:
            raise SettingsError(
                f"{DECODE_MEMORY_MIB.name}: {explicit} MiB is too little; {one_image}"
            )
        return DecodeMemory(explicit * MIB, wait_s, DECODE_MEMORY_MIB.name)
    limit = memory_limit()
    if limit is None:
        return DecodeMemory(UNLIMITED_DECODES * need, wait_s)
    if shortfall := sizing.shortfall(limit):
        lower = (MAX_IMAGE_PIXELS, WEB_CONCURRENCY, GUNICORN_THREADS, DOWNLOAD_THREADS)
        raise SettingsError(
            f"{shortfall}: raise the limit, or lower {', '.join(v.name for v in lower[:-1])} "
            f"or {lower[-1].name}, or set {DECODE_MEMORY_MIB.name}"
        )
    budget = sizing.budget(limit)
    source = f"the container's {limit // MIB} MiB limit, shared by {server.workers} workers"
    return DecodeMemory(budget, wait_s, source)


class _Reader:
    """Typed accessors for environment variables: each takes its ``Var`` and gives its
    default when the variable is unset or empty; every error names the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, var: Var[Any]) -> str | None:
        value = self.env.get(var.name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, var: Var[str]) -> str:
        return self._raw(var) or var.default

    def optional_text(self, var: Var[str | None]) -> str | None:
        return self._raw(var) or var.default

    def csv(self, var: Var[tuple[str, ...]]) -> tuple[str, ...]:
        raw = self._raw(var)
        if raw is None:
            return var.default
        items = tuple(part.strip() for part in raw.split(","))
        if any(not item for item in items):
            raise SettingsError(f"{var.name}: empty item in comma-separated list {raw!r}")
        return items

    def _one_of(self, var: Var[Any], allowed: tuple[str, ...]) -> str | None:
        raw = self._raw(var)
        if raw is not None and raw not in allowed:
            raise SettingsError(f"{var.name}: {raw!r} is not one of {', '.join(allowed)}")
        return raw

    def optional_choice(self, var: Var[str | None], allowed: tuple[str, ...]) -> str | None:
        return self._one_of(var, allowed) or var.default

    def choice(self, var: Var[str], allowed: tuple[str, ...]) -> str:
        return self._one_of(var, allowed) or var.default

    def _number(self, var: Var[Any], cast: type[int] | type[float]) -> int | float | None:
        raw = self._raw(var)
        if raw is None:
            return None
        try:
            return cast(raw)
        except ValueError:
            kind = "an integer" if cast is int else "a number"
            raise SettingsError(f"{var.name}: {raw!r} is not {kind}") from None

    def positive_int(self, var: Var[int]) -> int:
        value = self._number(var, int)
        if value is None:
            return var.default
        if value <= 0:
            raise SettingsError(f"{var.name}: must be > 0, got {value}")
        return int(value)

    def non_negative_int(self, var: Var[int]) -> int:
        value = self._number(var, int)
        if value is None:
            return var.default
        if value < 0:
            raise SettingsError(f"{var.name}: must be >= 0, got {value}")
        return int(value)

    def optional_int(self, var: Var[int | None]) -> int | None:
        value = self._number(var, int)
        if value is None:
            return var.default
        if value <= 0:
            raise SettingsError(f"{var.name}: must be > 0, got {value}")
        return int(value)

    def positive_float(self, var: Var[float]) -> float:
        value = self._number(var, float)
        if value is None:
            return var.default
        if not value > 0 or value == float("inf"):
            raise SettingsError(f"{var.name}: must be a finite number > 0, got {value}")
        return float(value)

    def boolean(self, var: Var[bool]) -> bool:
        raw = self._raw(var)
        if raw is None:
            return var.default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{var.name}: {raw!r} is not a boolean (true/false)")

    def size(self, var: Var[tuple[int, int] | None]) -> tuple[int, int] | None:
        raw = self._raw(var)
        if raw is None:
            return var.default
        parts = raw.lower().split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            dims = []
        if len(dims) == 1:
            dims = dims * 2
        if len(dims) != 2 or not all(0 < d <= 4096 for d in dims):
            raise SettingsError(f"{var.name}: expected N or HxW with 1..4096, got {raw!r}")
        return dims[0], dims[1]

    def key_file(self, var: Var[str | None]) -> str | None:
        """A path to an API key file that exists and parses now (it may change later)."""
        path = self._raw(var) or var.default
        if path is None:
            return None
        try:
            KeyFile.load(Path(path))
        except KeyFileError as exc:
            raise SettingsError(f"{var.name}: {exc}") from None
        return path

    def policy(self, var: Var[tuple[str, ...]]) -> AccessPolicy:
        try:
            return AccessPolicy.parse(self.csv(var))
        except ValueError as exc:
            raise SettingsError(f"{var.name}: {exc}") from None
