"""How much memory a gateway process may spend decoding images at once, and the gate that
keeps it there.

One decode is bounded (``imaging``: 1.5x the 8-bit RGB size of an image at the pixel cap
plus the codecs' fixed buffers, 188 MiB at the default 40 M pixels), but a worker decodes
on each of its threads at once, so without a gate a handful of large images sent together
would take a pod past its memory limit and get it OOM-killed. Each decode reserves its planned peak
here first; when the budget is taken it waits a few seconds for a decode to finish, then
fails with ``decoder_busy`` and a Retry-After. The client retries; the pod lives.

The budget comes from the container: its cgroup memory limit, shared by the workers, less
what each needs besides decoding (its own footprint, and the request and download bodies
its threads may hold at once): ``serving_contract.gateway_env.DecodeSizing``, which the
Pulumi program checks the gateway pods' memory with. ``DECODE_MEMORY_MIB`` sets it
outright; with no limit at all (a laptop) it is two decodes at the cap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.failures import Failure
from serving_contract.gateway_env import mib

CGROUP = Path("/sys/fs/cgroup")
# cgroup v1 reports "no limit" as a huge number (a page-rounded 2^63)
_NO_LIMIT_V1 = 2**60


def container_memory_limit(root: Path = CGROUP) -> int | None:
    """This container's memory limit in bytes (cgroup v2, else v1), or None without one."""
    try:
        raw = (root / "memory.max").read_text().strip()
        return None if raw == "max" else int(raw)
    except (OSError, ValueError):
        pass
    try:
        limit = int((root / "memory" / "memory.limit_in_bytes").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit >= _NO_LIMIT_V1 else limit


class MemoryGate:
    """A budget of bytes shared by a process's threads (a semaphore counted in bytes)."""

    def __init__(self, capacity: int, wait_s: float, retry_after_s: int) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s
        self._used = 0
        self._free = threading.Condition()

    @property
    def used(self) -> int:
        with self._free:
            return self._used

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the block; Failure ``decoder_busy`` if they
        do not come free within ``wait_s``. A request above the whole budget waits for
        all of it (the settings make sure one decode at the pixel cap fits)."""
        nbytes = min(nbytes, self.capacity)
        deadline = time.monotonic() + self.wait_s
        with self._free:
            while self._used + nbytes > self.capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Failure(
                        "decoder_busy",
                        f"this worker's {mib(self.capacity)} for decoding is taken by "
                        "other large images; retry shortly",
                        retry_after=self.retry_after_s,
                    )
                self._free.wait(remaining)
            self._used += nbytes
        try:
            yield
        finally:
            with self._free:
                self._used -= nbytes
                self._free.notify_all()
