"""Gateway settings: one typed object, read from the environment and validated up front."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.imaging import MODES as PREPROCESSING_MODES
from gateway.manifest import ManifestError, load_manifest
from gateway.netguard import AccessPolicy

CLOTHING_CLASSES = (
    "dress",
    "hat",
    "longsleeve",
    "outwear",
    "pants",
    "shirt",
    "shoes",
    "shorts",
    "skirt",
    "t-shirt",
)
RESIZE_FILTERS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
ACTIVATIONS = ("softmax", "none")
LB_POLICIES = ("round_robin", "pick_first")


class SettingsError(ValueError):
    """A setting has a value the gateway cannot run with; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # Model server
    model_target: str = "localhost:8500"
    lb_policy: str = "round_robin"
    model_name: str = "clothing-model"
    model_version: int | None = None
    signature_name: str = "serving_default"
    input_name: str | None = None
    output_name: str | None = None
    class_labels: tuple[str, ...] = CLOTHING_CLASSES
    output_activation: str = "softmax"
    model_timeout_s: float = 5.0
    metadata_ttl_s: float = 60.0
    retry_after_s: int = 5
    # Preprocessing
    image_size: tuple[int, int] = (299, 299)
    resize_filter: str = "nearest"
    preprocessing: str = "tf"
    exif_transpose: bool = True
    max_image_pixels: int = 40_000_000
    # Requests and downloads
    max_image_bytes: int = 10 * 1024 * 1024
    max_urls: int = 16
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    download_timeout_s: float = 10.0
    max_redirects: int = 3
    download_threads: int = 8
    fetch_policy: AccessPolicy = field(default_factory=AccessPolicy)
    user_agent: str = "clothing-gateway/0.1"

    @property
    def max_request_bytes(self) -> int:
        """Upper bound of a request body: one image plus multipart/JSON overhead."""
        return self.max_image_bytes + 64 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (see the gateway README for the list).

        ``MODEL_MANIFEST`` names an export manifest whose labels, tensor names, input size
        and logits flag become the defaults; explicit variables still win.
        """
        env = os.environ if env is None else env
        r = _Reader(env)
        defaults = cls()
        manifest = None
        if manifest_path := r.optional_text("MODEL_MANIFEST"):
            try:
                manifest = load_manifest(manifest_path)
            except ManifestError as exc:
                raise SettingsError(f"MODEL_MANIFEST: {exc}") from None

        labels = r.csv("CLASS_LABELS") or (
            manifest.class_labels if manifest else defaults.class_labels
        )
        if len(set(labels)) != len(labels):
            raise SettingsError(f"CLASS_LABELS: labels must be unique, got {list(labels)}")
        activation_default = defaults.output_activation
        if manifest is not None:
            activation_default = "softmax" if manifest.outputs_are_logits else "none"
        return cls(
            model_target=r.text("TF_SERVING_HOST", defaults.model_target),
            lb_policy=r.choice("GRPC_LB_POLICY", LB_POLICIES, defaults.lb_policy),
            model_name=r.text(
                "MODEL_NAME", manifest.model_name if manifest else defaults.model_name
            ),
            model_version=r.optional_int("MODEL_VERSION"),
            signature_name=r.text(
                "MODEL_SIGNATURE",
                manifest.signature_name if manifest else defaults.signature_name,
            ),
            input_name=r.optional_text("MODEL_INPUT_NAME")
            or (manifest.input_name if manifest else None),
            output_name=r.optional_text("MODEL_OUTPUT_NAME")
            or (manifest.output_name if manifest else None),
            class_labels=labels,
            output_activation=r.choice("OUTPUT_ACTIVATION", ACTIVATIONS, activation_default),
            model_timeout_s=r.positive_float("MODEL_TIMEOUT_S", defaults.model_timeout_s),
            metadata_ttl_s=r.positive_float("MODEL_METADATA_TTL_S", defaults.metadata_ttl_s),
            retry_after_s=r.positive_int("RETRY_AFTER_S", defaults.retry_after_s),
            image_size=r.size(
                "IMAGE_SIZE", manifest.input_size if manifest else defaults.image_size
            ),
            resize_filter=r.choice("RESIZE_FILTER", RESIZE_FILTERS, defaults.resize_filter),
            preprocessing=r.choice("PREPROCESSING", PREPROCESSING_MODES, defaults.preprocessing),
            exif_transpose=r.boolean("EXIF_TRANSPOSE", defaults.exif_transpose),
            max_image_pixels=r.positive_int("MAX_IMAGE_PIXELS", defaults.max_image_pixels),
            max_image_bytes=r.positive_int("MAX_IMAGE_BYTES", defaults.max_image_bytes),
            max_urls=r.positive_int("MAX_URLS", defaults.max_urls),
            connect_timeout_s=r.positive_float("CONNECT_TIMEOUT_S", defaults.connect_timeout_s),
            read_timeout_s=r.positive_float("READ_TIMEOUT_S", defaults.read_timeout_s),
            download_timeout_s=r.positive_float("DOWNLOAD_TIMEOUT_S", defaults.download_timeout_s),
            max_redirects=r.non_negative_int("MAX_REDIRECTS", defaults.max_redirects),
            download_threads=r.positive_int("DOWNLOAD_THREADS", defaults.download_threads),
            fetch_policy=r.policy("FETCH_ALLOW"),
            user_agent=r.text("USER_AGENT", defaults.user_agent),
        )


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

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw not in allowed:
            raise SettingsError(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
        return raw

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

    def size(self, name: str, default: tuple[int, int]) -> tuple[int, int]:
        raw = self._raw(name)
        if raw is None:
            return default
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

    def policy(self, name: str) -> AccessPolicy:
        try:
            return AccessPolicy.parse(self.csv(name))
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None
