"""How far along the model server's wake-up is, as this process sees it.

A stack with ``MODEL_WAKE_ESTIMATE_S`` above 0 scales TF Serving to zero replicas when
nobody uses it. The next request finds no model server: the autoscaler sees that request
in the gateway's image counter and starts one, and a GPU node, the image's pull and the
model's load take minutes. Every request fails meanwhile, and the gateway says so with
``model_waking``, how long this wake has been going and how long a wake takes, so that a
client (the website) can tell a person and retry when it is worth it, rather than show a
failure for what is only a wait.

Nothing tells the gateway that a wake began or ended; it sees its own calls to the model
server. A wake begins at a failure that finds no model server (or no model loaded) when
none was going on, and ends at the next call that succeeds. If requests were still
waiting for the model then (the last such failure at most ``SAME_WAKE_S`` before), the
wake's length was measured, and it estimates the next wake instead of the configured
figure, which is a guess made before deploying. The clock is per process (each gunicorn
worker keeps its own; the website's retries reach them all): nothing shared, and a new
worker starts from the configured estimate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Failures this close together belong to one wake, and a success this soon after one ends
# the wake it measures. It is longer than the longest Retry-After of a wake (30 s,
# ``model_errors``), so a client that retries as told never splits a wake in two, even after
# a short measured one: a failure more than the estimate after the last would otherwise
# start a new wake, and a model server's restart of a few seconds, measured, would restart
# the next real wake at every retry, and be measured again from the last restart.
SAME_WAKE_S = 60.0


@dataclass(frozen=True)
class Wake:
    """A wake as a request sees it: how long one takes, and how long this one has taken."""

    estimate_s: float
    elapsed_s: float

    @property
    def remaining_s(self) -> float:
        return max(self.estimate_s - self.elapsed_s, 0.0)


class WakeClock:
    """One per process; thread-safe. ``now`` is ``time.monotonic`` unless a test drives it."""

    def __init__(self, estimate_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self._lock = threading.Lock()
        self._estimate_s = float(estimate_s)
        self._started: float | None = None  # None: no wake going on
        self._last_failure = 0.0

    def _start(self, at: float) -> float:
        """When the wake going on at ``at`` started; ``at`` when none is."""
        quiet = at - self._last_failure > max(self._estimate_s, SAME_WAKE_S)
        return at if self._started is None or quiet else self._started

    def failed(self) -> Wake:
        """A call found no model server, or no model loaded: the wake going on, or a new
        one from now."""
        at = self.now()
        with self._lock:
            self._started, self._last_failure = self._start(at), at
            return Wake(self._estimate_s, at - self._started)

    def succeeded(self) -> None:
        """A call to the model server succeeded: a wake going on ends, and estimates the
        next when requests were waiting for it until now."""
        at = self.now()
        with self._lock:
            if self._started is None:
                return
            measured = at - self._started if at - self._last_failure <= SAME_WAKE_S else None
            self._started = None
            if measured is not None:
                self._estimate_s = measured
        if measured is not None:
            log.info("model woke in %d s", round(measured), extra={"wake_s": round(measured, 1)})
