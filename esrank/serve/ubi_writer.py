"""The sidecar's UBI writer: what /search served and what /events reports go to the engine's
UBI indices from one background thread, in bulk, off the request path.

A request only puts records on a bounded queue. The thread sends them every `interval`
seconds (or when `batch` are waiting). When the queue is full or the engine refuses, records
are dropped and counted (esrank_ubi_dropped), never retried into a growing backlog: search
keeps its latency when the engine is slow.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from esrank.ubi.log import UbiEvent, UbiQuery

log = logging.getLogger(__name__)

Record = UbiQuery | UbiEvent


class UbiWriter:
    def __init__(self, send: Callable[[list[UbiQuery], list[UbiEvent]], int], *,
                 max_queue: int = 10_000, batch: int = 500, interval: float = 0.5,
                 on_drop: Callable[[int], None] | None = None):
        self._send, self._batch, self._interval = send, batch, interval
        self._queue: queue.Queue[Record] = queue.Queue(max_queue)
        self._on_drop = on_drop or (lambda n: None)
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="esrank-ubi", daemon=True)
        self._thread.start()

    def put(self, records: Sequence[Record]) -> int:
        """Queue records; returns how many were accepted (the rest are dropped, counted)."""
        accepted = 0
        for record in records:
            try:
                self._queue.put_nowait(record)
                accepted += 1
            except queue.Full:
                break
        if accepted < len(records):
            self._on_drop(len(records) - accepted)
        self._idle.clear()
        return accepted

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record was sent (or dropped); False on timeout."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            pending: list[Record] = []
            try:
                pending.append(self._queue.get(timeout=self._interval))
            except queue.Empty:
                self._idle.set()
                continue
            # gather for `interval` after the first: one bulk per interval, not one per search
            # (on a small machine the engine's indexing would slow the searches themselves)
            deadline = time.monotonic() + self._interval
            while len(pending) < self._batch and not self._stop.is_set():
                try:
                    pending.append(self._queue.get(timeout=max(0.0, deadline -
                                                               time.monotonic())))
                except queue.Empty:
                    break
            queries = [r for r in pending if isinstance(r, UbiQuery)]
            events = [r for r in pending if isinstance(r, UbiEvent)]
            try:
                self._send(queries, events)
            except Exception as exc:  # the engine down or refusing: drop, count, go on
                log.warning("UBI: %d records not stored (%s)", len(pending), exc)
                self._on_drop(len(pending))
            if self._queue.empty():
                self._idle.set()
