"""The sidecar's profile writer: the live profiles /events changed (esrank.personal.live) go
to the profile index from one background thread, off the request path.

It stores the shoppers changed since the last write as soon as there are any, and then at
most once per `interval` (0.5 s): an isolated cart add is stored within milliseconds, a busy
sidecar writes twice a second, one realtime _mget of the stored states and one bulk however
many actions each shopper gained. A failed write is logged and its changes wait for the next
one (MAX_PENDING shoppers at most; past it new actions are not applied, and counted).
`close` stores what is left, waiting at most its timeout.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

POLL = 0.02  # seconds between looks for changes to store


class ProfileWriter:
    def __init__(self, live, *, interval: float = 0.5):
        self._live, self._interval = live, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="esrank-profiles", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every change was stored; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._live.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._live.pending

    def close(self, timeout: float = 5.0) -> bool:
        """Stop after one last write; True when nothing is left unstored."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive() and not self._live.pending

    def _run(self) -> None:
        last = 0.0
        while not self._stop.wait(POLL):  # a look at a counter: nothing when idle
            if self._live.pending and time.monotonic() - last >= self._interval:
                last = time.monotonic()
                self._store()
        self._store()  # the drain on close

    def _store(self) -> None:
        try:
            self._live.store_pending(time.time())
        except Exception as exc:  # the engine down or refusing: tried again next interval
            log.warning("profiles: %d shoppers' changes not stored yet (%s)",
                        self._live.pending, exc)
