"""Dynamic batching for the encoder: concurrent requests share one forward pass.

Requests queue their texts; one worker thread takes as many as fit (max_batch texts and
token_budget tokens), waiting at most max_wait_us for company after the first arrives (0: no
wait; requests arriving during a batch form the next), encodes them together and hands each
request its rows. The queue is bounded, in requests and in
texts: when it is full a new request is refused at once (QueueFullError) instead of waiting
without limit. A request whose caller stopped waiting (timeout) is dropped before it is
encoded. Single texts seen recently come from an LRU cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from esrank.encoder import Encoder


class QueueFullError(Exception):
    """The queue is full; retry after `retry_after` seconds."""

    def __init__(self, retry_after: float):
        super().__init__(f"encoder queue full; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


@dataclass
class _Job:
    texts: list[str]
    tokens: int
    future: Future = field(default_factory=Future)


@dataclass
class BatcherStats:
    batches: int = 0
    texts: int = 0
    cache_hits: int = 0
    refused: int = 0
    dropped: int = 0  # requests whose caller timed out before they were encoded


class Batcher:
    """Coalesce concurrent encode calls.

    >>> b = Batcher(encoder, max_batch=64)                     # doctest: +SKIP
    >>> b.encode(["bluetooth speaker"]).shape                  # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, encoder: Encoder, *, max_batch: int = 64, max_wait_us: int = 0,
                 token_budget: int = 8192, max_queue: int = 256,
                 max_queue_texts: int = 2048, cache_size: int = 4096, on_batch=None):
        self.encoder = encoder
        self.max_batch, self.max_wait = max_batch, max_wait_us / 1e6
        self.token_budget, self.max_queue = token_budget, max_queue
        self.max_queue_texts = max_queue_texts
        self._queued_texts = 0
        self.stats = BatcherStats()
        self._on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._recent_seconds = 0.05  # moving estimate of one batch, for Retry-After
        self._worker = threading.Thread(target=self._run, name="esrank-batcher", daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def encode(self, texts: list[str], timeout: float | None = None) -> np.ndarray:
        """Vectors for `texts` (n x dims); raises QueueFullError or TimeoutError."""
        if len(texts) == 1 and texts[0] in self._cache:
            with self._cond:
                vector = self._cache.get(texts[0])
                if vector is not None:
                    self._cache.move_to_end(texts[0])
                    self.stats.cache_hits += 1
                    return vector[None]
        job = _Job(list(texts), sum(self.encoder.token_counts(texts)))
        with self._cond:
            if (len(self._queue) >= self.max_queue
                    or self._queued_texts + len(texts) > self.max_queue_texts):
                self.stats.refused += 1
                raise QueueFullError(max(1.0, self._recent_seconds * self._queued_texts
                                     / max(1, self.max_batch)))
            self._queue.append(job)
            self._queued_texts += len(texts)
            self._cond.notify()
        try:
            vectors = job.future.result(timeout=timeout)
        except TimeoutError:
            job.future.cancel()  # still queued: the worker drops it; already running: no-op
            raise
        if len(texts) == 1:
            with self._cond:
                self._cache[texts[0]] = vectors[0]
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vectors

    def _take(self) -> list[_Job]:
        with self._cond:
            while not self._queue:
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait
            while len(self._queue) < self.max_batch and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            jobs, count, tokens = [], 0, 0
            while self._queue:
                job = self._queue[0]
                over = (count + len(job.texts) > self.max_batch
                        or tokens + job.tokens > self.token_budget)
                if jobs and over:
                    break
                self._queue.popleft()
                self._queued_texts -= len(job.texts)
                if not job.future.set_running_or_notify_cancel():
                    self.stats.dropped += 1  # its caller gave up waiting
                    continue
                jobs.append(job)
                count, tokens = count + len(job.texts), tokens + job.tokens
            return jobs

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if not jobs:
                continue
            texts = [t for job in jobs for t in job.texts]
            started = time.monotonic()
            try:
                vectors = self.encoder.encode(texts, batch_size=max(len(texts), 1))
            except Exception as exc:  # hand the failure to every waiting request
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            took = time.monotonic() - started
            self._recent_seconds = 0.8 * self._recent_seconds + 0.2 * took
            self.stats.batches += 1
            self.stats.texts += len(texts)
            if self._on_batch:
                self._on_batch(len(texts), took)
            start = 0
            for job in jobs:
                job.future.set_result(vectors[start:start + len(job.texts)])
                start += len(job.texts)
