"""The gateway's environment: every variable it reads, with its default, and the memory a
gateway worker needs for them.

The gateway's settings (``gateway.settings``) read these names and fall back to these
defaults; the Pulumi program builds the gateway pods' environment from the same names, and
checks at preview that the pods' memory holds what the gateway will require of it
(``decode_budget`` against ``image_peak_bytes``), so the check and the gateway cannot
disagree. A variable's meaning is in the gateway's README ("Settings").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from serving_contract.model import DEFAULT_MODEL_NAME, SIGNATURE
from serving_contract.ports import GATEWAY_PORT, GRPC_PORT

T = TypeVar("T")
MIB = 2**20


def mib(nbytes: int, *, up: bool = False) -> str:
    """A size as every message of the gateway states it, nginx's and the website's too: in
    MiB, to two decimals (three significant digits below 1 MiB), without trailing zeros.

    A limit is rounded down and a measured size (``up``) up, so "larger than <limit>" is
    always true, and a size over a limit never reads as the limit itself."""
    places = 2
    while 0 < nbytes * 10**places < 100 * MIB:
        places += 1
    scaled, rest = divmod(nbytes * 10**places, MIB)
    whole, fraction = divmod(scaled + (up and rest > 0), 10**places)
    return f"{whole}.{fraction:0{places}d}".rstrip("0").rstrip(".") + " MiB"


@dataclass(frozen=True)
class Var(Generic[T]):
    """An environment variable and the value the gateway uses when it is unset or empty."""

    name: str
    default: T


# The model server, and which model
TF_SERVING_HOST = Var("TF_SERVING_HOST", f"localhost:{GRPC_PORT}")
GRPC_LB_POLICY = Var("GRPC_LB_POLICY", "round_robin")
LB_POLICIES = ("round_robin", "pick_first")
MODEL_NAME = Var("MODEL_NAME", DEFAULT_MODEL_NAME)
MODEL_VERSION = Var[int | None]("MODEL_VERSION", None)  # None: the latest
MODEL_SIGNATURE = Var("MODEL_SIGNATURE", SIGNATURE)
MODEL_TIMEOUT_S = Var("MODEL_TIMEOUT_S", 5.0)
MODEL_METADATA_TTL_S = Var("MODEL_METADATA_TTL_S", 60.0)
RETRY_AFTER_S = Var("RETRY_AFTER_S", 5)
# > 0: the model server sleeps at zero replicas when idle, and a wake takes about this long
MODEL_WAKE_ESTIMATE_S = Var("MODEL_WAKE_ESTIMATE_S", 0)
# Overrides of what the model's signature says (None or empty: the signature's)
MODEL_INPUT_NAME = Var[str | None]("MODEL_INPUT_NAME", None)
MODEL_OUTPUT_NAME = Var[str | None]("MODEL_OUTPUT_NAME", None)
CLASS_LABELS = Var[tuple[str, ...]]("CLASS_LABELS", ())
OUTPUT_ACTIVATION = Var[str | None]("OUTPUT_ACTIVATION", None)
IMAGE_SIZE = Var[tuple[int, int] | None]("IMAGE_SIZE", None)
PREPROCESSING = Var[str | None]("PREPROCESSING", None)

# Images
RESIZE_FILTER = Var("RESIZE_FILTER", "nearest")  # what Keras's load_img uses by default
EXIF_TRANSPOSE = Var("EXIF_TRANSPOSE", True)
MAX_IMAGE_PIXELS = Var("MAX_IMAGE_PIXELS", 40_000_000)
MAX_IMAGE_BYTES = Var("MAX_IMAGE_BYTES", 10 * MIB)
MAX_URLS = Var("MAX_URLS", 16)

# Downloads
CONNECT_TIMEOUT_S = Var("CONNECT_TIMEOUT_S", 3.0)
READ_TIMEOUT_S = Var("READ_TIMEOUT_S", 5.0)
DOWNLOAD_TIMEOUT_S = Var("DOWNLOAD_TIMEOUT_S", 10.0)
MAX_REDIRECTS = Var("MAX_REDIRECTS", 3)
USER_AGENT = Var("USER_AGENT", "clothing-gateway")
FETCH_ALLOW = Var[tuple[str, ...]]("FETCH_ALLOW", ())
DOWNLOAD_THREADS = Var("DOWNLOAD_THREADS", 8)

# The server: gunicorn's address, processes and threads, and its Prometheus files
HOST = Var("HOST", "0.0.0.0")  # noqa: S104  (a container's port; the proxy binds 127.0.0.1)
PORT = Var("PORT", GATEWAY_PORT)
WEB_CONCURRENCY = Var("WEB_CONCURRENCY", 2)
GUNICORN_THREADS = Var("GUNICORN_THREADS", 8)
GUNICORN_TIMEOUT = Var("GUNICORN_TIMEOUT", 30)  # longer than the slowest legal request
GUNICORN_GRACEFUL_TIMEOUT = Var("GUNICORN_GRACEFUL_TIMEOUT", 20)
GUNICORN_MAX_REQUESTS = Var("GUNICORN_MAX_REQUESTS", 0)  # 0: a worker is never replaced
GUNICORN_TMP_DIR = Var[str | None]("GUNICORN_TMP_DIR", None)  # None: gunicorn's choice
PROMETHEUS_MULTIPROC_DIR = Var[str | None]("PROMETHEUS_MULTIPROC_DIR", None)

# Decoding memory (below)
DECODE_MEMORY_MIB = Var[int | None]("DECODE_MEMORY_MIB", None)  # None: from the container
DECODE_WAIT_S = Var("DECODE_WAIT_S", 5.0)

# Access
API_KEYS_FILE = Var[str | None]("API_KEYS_FILE", None)  # None: /predict is open
API_KEYS_RELOAD_S = Var("API_KEYS_RELOAD_S", 10.0)
HSTS_MAX_AGE_S = Var("HSTS_MAX_AGE_S", 0)  # 0: no Strict-Transport-Security

# How much memory decoding takes. One decode is bounded (the gateway's ``imaging``): 1.5x
# the 8-bit RGB size of an image at the pixel cap plus the codecs' fixed buffers, 188 MiB at
# the default 40 M pixels. A worker's resident memory besides decoding: ~80 MiB measured
# after serving, plus up to 64 MiB of freed heap glibc keeps (the gateway's gunicorn_conf),
# rounded up.
WORKER_BASE_BYTES = 160 * MIB
PEAK_BYTES_PER_PIXEL = 1.5 * 3
# ...plus what a decode takes whatever the image's size: the codecs' own buffers (at most
# libwebp's 9 MiB) and an upright copy's 4 MiB, rounded up. Without it a small pixel cap
# would leave less than any decode needs, and every image would be refused.
PEAK_FIXED_BYTES = 16 * MIB
# The request body a worker thread may hold: one image plus multipart/JSON overhead.
BODY_OVERHEAD_BYTES = 64 * 1024


def image_peak_bytes(max_pixels: int) -> int:
    """The most one decode may take: the budget the gateway plans every decode against."""
    return int(PEAK_BYTES_PER_PIXEL * max_pixels) + PEAK_FIXED_BYTES


def decode_budget(
    limit_bytes: int, workers: int, threads: int, download_threads: int, max_image_bytes: int
) -> int:
    """Each worker's share of a container ``limit_bytes`` that is left for decoding: its
    footprint, and a body per request thread and per download thread, set aside first."""
    bodies = (threads + download_threads) * max_image_bytes
    return limit_bytes // workers - WORKER_BASE_BYTES - bodies


@dataclass(frozen=True)
class DecodeSizing:
    """The settings that decide how much memory a gateway worker decodes with."""

    workers: int = WEB_CONCURRENCY.default
    threads: int = GUNICORN_THREADS.default
    download_threads: int = DOWNLOAD_THREADS.default
    max_image_bytes: int = MAX_IMAGE_BYTES.default
    max_pixels: int = MAX_IMAGE_PIXELS.default

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DecodeSizing:
        """From an environment whose sizing variables are unset or plain integers, as the
        Pulumi program writes them (the gateway's settings read and check every variable
        themselves, then build this)."""

        def value(var: Var[int]) -> int:
            return int(env.get(var.name) or var.default)

        return cls(
            value(WEB_CONCURRENCY),
            value(GUNICORN_THREADS),
            value(DOWNLOAD_THREADS),
            value(MAX_IMAGE_BYTES),
            value(MAX_IMAGE_PIXELS),
        )

    @property
    def one_image_bytes(self) -> int:
        return image_peak_bytes(self.max_pixels)

    def budget(self, limit_bytes: int) -> int:
        """Each worker's budget for decoding in a container of ``limit_bytes``."""
        return decode_budget(
            limit_bytes, self.workers, self.threads, self.download_threads, self.max_image_bytes
        )

    def shortfall(self, limit_bytes: int) -> str | None:
        """Why a gateway would refuse to start in a container of ``limit_bytes`` without
        ``DECODE_MEMORY_MIB`` (None: it starts)."""
        budget, need = self.budget(limit_bytes), self.one_image_bytes
        if budget >= need:
            return None
        return (
            f"the container's memory limit ({limit_bytes // MIB} MiB) leaves "
            f"{max(budget, 0) // MIB} MiB per worker for decoding, and one image at "
            f"{MAX_IMAGE_PIXELS.name}={self.max_pixels} needs {-(-need // MIB)} MiB"
        )
