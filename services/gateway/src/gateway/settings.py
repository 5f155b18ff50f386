"""Gateway settings: one typed object, read from the environment and validated up front.

Nothing here describes a particular model: the served model's signature says what it
takes and returns (``gateway.signature``). The model settings below exist to point at a
model and, rarely, to override what its signature says.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.api_keys import RELOAD_S, KeyFile, KeyFileError
from gateway.decode_memory import container_memory_limit
from gateway.fetch import FetchLimits
from gateway.netguard import AccessPolicy
from serving_contract.gateway_env import MIB, DecodeSizing, image_peak_bytes
from serving_contract.model import DEFAULT_MODEL_NAME, PREPROCESSING_MODES, SIGNATURE

RESIZE_FILTERS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
ACTIVATIONS = ("softmax", "none")
LB_POLICIES = ("round_robin", "pick_first")


class SettingsError(ValueError):
    """A setting has a value the gateway cannot run with; the message names the variable."""


@dataclass(frozen=True)
class ModelSettings:
    """Which model to call, and how long to wait for it. The overrides (None/empty: take
    it from the model's signature) exist for models not exported by ``model_tools``."""

    target: str = "localhost:8500"
    lb_policy: str = "round_robin"
    name: str = DEFAULT_MODEL_NAME
    version: int | None = None
    signature_name: str = SIGNATURE
    timeout_s: float = 5.0
    metadata_ttl_s: float = 60.0
    retry_after_s: int = 5
    # overrides of the signature
    input_name: str | None = None
    output_name: str | None = None
    class_labels: tuple[str, ...] = ()
    output_activation: str | None = None
    image_size: tuple[int, int] | None = None
    preprocessing: str | None = None


@dataclass(frozen=True)
class ImageSettings:
    """Decoding: the size and the normalisation come from the model's signature."""

    resize_filter: str = "nearest"  # what Keras's load_img uses by default
    exif_transpose: bool = True
    max_pixels: int = 40_000_000


@dataclass(frozen=True)
class ServerSettings:
    """gunicorn's worker processes and threads per worker (gunicorn_conf takes them from
    here; the memory budget below depends on them)."""

    workers: int = 2
    threads: int = 8


@dataclass(frozen=True)
class DecodeMemory:
    """Each worker's budget for the images it decodes at once (``gateway.decode_memory``)
    and how long a decode waits for its share before ``decoder_busy``."""

    budget_bytes: int = 2 * image_peak_bytes(ImageSettings.max_pixels)
    wait_s: float = 5.0
    source: str = "default: two images at the pixel cap (no container memory limit)"


@dataclass(frozen=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    image: ImageSettings = field(default_factory=ImageSettings)
    fetch: FetchLimits = field(default_factory=FetchLimits)
    fetch_policy: AccessPolicy = field(default_factory=AccessPolicy)
    server: ServerSettings = field(default_factory=ServerSettings)
    decode_memory: DecodeMemory = field(default_factory=DecodeMemory)
    max_urls: int = 16
    download_threads: int = 8
    # SHA-256 digests of the API keys /predict accepts (gateway.api_keys); None: no keys
    api_keys_file: Path | None = None
    api_keys_reload_s: float = RELOAD_S  # how soon a changed key file takes effect
    # Strict-Transport-Security on every answer, when TLS ends at the load balancer in front
    hsts_max_age_s: int = 0

    @property
    def max_request_bytes(self) -> int:
        """Upper bound of a request body: one image plus multipart/JSON overhead."""
        return self.fetch.max_bytes + 64 * 1024

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        memory_limit: Callable[[], int | None] = container_memory_limit,
    ) -> Settings:
        """Build settings from environment variables (see the gateway README for the list);
        ``memory_limit`` gives the container's memory limit in bytes, if it has one."""
        r = _Reader(os.environ if env is None else env)
        m, i, f, top = ModelSettings(), ImageSettings(), FetchLimits(), cls()
        labels = r.csv("CLASS_LABELS")
        if len(set(labels)) != len(labels):
            raise SettingsError(f"CLASS_LABELS: labels must be unique, got {list(labels)}")
        model = ModelSettings(
            target=r.text("TF_SERVING_HOST", m.target),
            lb_policy=r.choice("GRPC_LB_POLICY", LB_POLICIES, m.lb_policy),
            name=r.text("MODEL_NAME", m.name),
            version=r.optional_int("MODEL_VERSION"),
            signature_name=r.text("MODEL_SIGNATURE", m.signature_name),
            timeout_s=r.positive_float("MODEL_TIMEOUT_S", m.timeout_s),
            metadata_ttl_s=r.positive_float("MODEL_METADATA_TTL_S", m.metadata_ttl_s),
            retry_after_s=r.positive_int("RETRY_AFTER_S", m.retry_after_s),
            input_name=r.optional_text("MODEL_INPUT_NAME"),
            output_name=r.optional_text("MODEL_OUTPUT_NAME"),
            class_labels=labels,
            output_activation=r.optional_choice("OUTPUT_ACTIVATION", ACTIVATIONS),
            image_size=r.size("IMAGE_SIZE"),
            preprocessing=r.optional_choice("PREPROCESSING", PREPROCESSING_MODES),
        )
        image = ImageSettings(
            resize_filter=r.choice("RESIZE_FILTER", RESIZE_FILTERS, i.resize_filter),
            exif_transpose=r.boolean("EXIF_TRANSPOSE", i.exif_transpose),
            max_pixels=r.positive_int("MAX_IMAGE_PIXELS", i.max_pixels),
        )
        fetch = FetchLimits(
            max_bytes=r.positive_int("MAX_IMAGE_BYTES", f.max_bytes),
            connect_timeout_s=r.positive_float("CONNECT_TIMEOUT_S", f.connect_timeout_s),
            read_timeout_s=r.positive_float("READ_TIMEOUT_S", f.read_timeout_s),
            total_timeout_s=r.positive_float("DOWNLOAD_TIMEOUT_S", f.total_timeout_s),
            max_redirects=r.non_negative_int("MAX_REDIRECTS", f.max_redirects),
            user_agent=r.text("USER_AGENT", f.user_agent),
        )
        server = ServerSettings(
            workers=r.positive_int("WEB_CONCURRENCY", top.server.workers),
            threads=r.positive_int("GUNICORN_THREADS", top.server.threads),
        )
        download_threads = r.positive_int("DOWNLOAD_THREADS", top.download_threads)
        return cls(
            model=model,
            image=image,
            fetch=fetch,
            fetch_policy=r.policy("FETCH_ALLOW"),
            server=server,
            decode_memory=_decode_memory(
                r, image.max_pixels, fetch.max_bytes, server, download_threads, memory_limit
            ),
            max_urls=r.positive_int("MAX_URLS", top.max_urls),
            download_threads=download_threads,
            api_keys_file=r.key_file("API_KEYS_FILE"),
            api_keys_reload_s=r.positive_float("API_KEYS_RELOAD_S", top.api_keys_reload_s),
            hsts_max_age_s=r.non_negative_int("HSTS_MAX_AGE_S", top.hsts_max_age_s),
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
    one_image = f"one image at MAX_IMAGE_PIXELS={max_pixels} needs {-(-need // MIB)} MiB"
    wait_s = r.positive_float("DECODE_WAIT_S", DecodeMemory.wait_s)
    explicit = r.optional_int("DECODE_MEMORY_MIB")
    if explicit is not None:
        if explicit * MIB < need:
            raise SettingsError(f"DECODE_MEMORY_MIB: {explicit} MiB is too little; {one_image}")
        return DecodeMemory(explicit * MIB, wait_s, "DECODE_MEMORY_MIB")
    limit = memory_limit()
    if limit is None:
        return DecodeMemory(2 * need, wait_s)
    if shortfall := sizing.shortfall(limit):
        raise SettingsError(
            f"{shortfall}: raise the limit, or lower MAX_IMAGE_PIXELS, WEB_CONCURRENCY, "
            "GUNICORN_THREADS or DOWNLOAD_THREADS, or set DECODE_MEMORY_MIB"
        )
    budget = sizing.budget(limit)
    source = f"the container's {limit // MIB} MiB limit, shared by {server.workers} workers"
    return DecodeMemory(budget, wait_s, source)


class _Reader:
    """Typed accessors for environment variables; every error names the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def optional_text(self, name: str) -> str | None:
        return self._raw(name)

    def csv(self, name: str) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return ()
        items = tuple(part.strip() for part in raw.split(","))
        if any(not item for item in items):
            raise SettingsError(f"{name}: empty item in comma-separated list {raw!r}")
        return items

    def optional_choice(self, name: str, allowed: tuple[str, ...]) -> str | None:
        raw = self._raw(name)
        if raw is not None and raw not in allowed:
            raise SettingsError(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
        return raw

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        return self.optional_choice(name, allowed) or default

    def _number(self, name: str, cast: type[int] | type[float]) -> int | float | None:
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            return cast(raw)
        except ValueError:
            kind = "an integer" if cast is int else "a number"
            raise SettingsError(f"{name}: {raw!r} is not {kind}") from None

    def positive_int(self, name: str, default: int) -> int:
        value = self._number(name, int)
        if value is None:
            return default
        if value <= 0:
            raise SettingsError(f"{name}: must be > 0, got {value}")
        return int(value)

    def non_negative_int(self, name: str, default: int) -> int:
        value = self._number(name, int)
        if value is None:
            return default
        if value < 0:
            raise SettingsError(f"{name}: must be >= 0, got {value}")
        return int(value)

    def optional_int(self, name: str) -> int | None:
        value = self._number(name, int)
        if value is not None and value <= 0:
            raise SettingsError(f"{name}: must be > 0, got {value}")
        return None if value is None else int(value)

    def positive_float(self, name: str, default: float) -> float:
        value = self._number(name, float)
        if value is None:
            return default
        if not value > 0 or value == float("inf"):
            raise SettingsError(f"{name}: must be a finite number > 0, got {value}")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}: {raw!r} is not a boolean (true/false)")

    def size(self, name: str) -> tuple[int, int] | None:
        raw = self._raw(name)
        if raw is None:
            return None
        parts = raw.lower().split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            dims = []
        if len(dims) == 1:
            dims = dims * 2
        if len(dims) != 2 or not all(0 < d <= 4096 for d in dims):
            raise SettingsError(f"{name}: expected N or HxW with 1..4096, got {raw!r}")
        return dims[0], dims[1]

    def key_file(self, name: str) -> Path | None:
        """A path to an API key file that exists and parses now (it may change later)."""
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            KeyFile.load(Path(raw))
        except KeyFileError as exc:
            raise SettingsError(f"{name}: {exc}") from None
        return Path(raw)

    def policy(self, name: str) -> AccessPolicy:
        try:
            return AccessPolicy.parse(self.csv(name))
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None
