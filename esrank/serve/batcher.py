"""Dynamic batching for the encoder: concurrent requests share one forward pass, and no
request, however large, makes one pass larger than the limits.

Requests queue their texts; one worker thread builds each batch of at most max_batch texts and
token_budget tokens, waiting at most max_wait_us for company after the first request arrives
(0: no wait; requests arriving during a batch form the next). It fills a batch from the
requests with the fewest texts left first, so a one-text query goes into the next batch ahead
of a large /embed request, whose texts are spread over as many batches as they need: a query
waits for at most the batch being encoded, and memory stays that of one bounded batch. The
queue is bounded, in requests and in texts: when it is full a new request is refused at once
(QueueFullError) instead of waiting without limit. The texts of a request whose caller stopped
waiting (timeout) are dropped before they are encoded. Single texts seen recently come from an
LRU cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from esrank.models.encoder import Encoder


class QueueFullError(Exception):
    """The queue is full; retry after `retry_after` seconds."""

    def __init__(self, retry_after: float):
        super().__init__(f"encoder queue full; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


def default_token_budget(encoder: Encoder) -> int:
    """Tokens per batch unless told: 16,384 on a GPU; 1,024 on the CPU, where larger batches
    gain little and each is time a query may wait behind /embed (bench/reliability.py)."""
    return 16_384 if getattr(encoder, "device", "cpu") == "cuda" else 1_024


@dataclass
class _Job:
    """One request: its texts and their token counts, how many were taken into batches, how
    many came back, and their vectors."""

    texts: list[str]
    tokens: list[int]
    taken: int = 0
    finished: int = 0
    vectors: np.ndarray | None = None
    abandoned: bool = False  # its caller stopped waiting
    future: Future = field(default_factory=Future)

    @property
    def left(self) -> int:
        return len(self.texts) - self.taken


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
                 token_budget: int | None = None, max_queue: int = 256,
                 max_queue_texts: int = 2048, cache_size: int = 4096, on_batch=None):
        self.encoder = encoder
        self.max_batch, self.max_wait = max_batch, max_wait_us / 1e6
        self.token_budget = token_budget or default_token_budget(encoder)
        self.max_queue = max_queue
        self.max_queue_texts = max_queue_texts
        self._queued_texts = 0
        self.stats = BatcherStats()
        self._on_batch = on_batch
        self._queue: list[_Job] = []
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
        job = _Job(list(texts), self.encoder.token_counts(texts))
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
            job.abandoned = True  # the worker drops what it has not taken yet
            raise
        if len(texts) == 1:
            with self._cond:
                self._cache[texts[0]] = vectors[0]
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vectors

    def _take(self) -> list[tuple[_Job, int, int]]:
        """The next batch: (request, first, end) slices of the queued requests' texts, from
        the requests with the fewest texts left first, within max_batch and token_budget (a
        single text over the budget goes alone)."""
        with self._cond:
            while not self._queue:
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait
            while self._queued_texts < self.max_batch and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            for job in [j for j in self._queue if j.abandoned]:
                self._drop(job)
                self.stats.dropped += 1
            pieces, count, tokens = [], 0, 0
            for job in sorted(self._queue, key=lambda j: j.left):
                first = end = job.taken
                while (end < len(job.texts) and count < self.max_batch
                       and (count == 0 or tokens + job.tokens[end] <= self.token_budget)):
                    count, tokens, end = count + 1, tokens + job.tokens[end], end + 1
                if end == first:
                    break
                pieces.append((job, first, end))
                job.taken = end
                self._queued_texts -= end - first
                if not job.left:
                    self._queue.remove(job)
            return pieces

    def _drop(self, job: _Job) -> None:
        self._queue.remove(job)
        self._queued_texts -= job.left

    def _run(self) -> None:
        while True:
            pieces = self._take()
            if not pieces:
                continue
            texts = [t for job, first, end in pieces for t in job.texts[first:end]]
            started = time.monotonic()
            try:
                vectors = self.encoder.encode(texts, batch_size=len(texts))
            except Exception as exc:  # hand the failure to every request in the batch
                with self._cond:
                    for job, _, _ in pieces:
                        if job in self._queue:
                            self._drop(job)
                        if not job.future.done():
                            job.future.set_exception(exc)
                continue
            took = time.monotonic() - started
            self._recent_seconds = 0.8 * self._recent_seconds + 0.2 * took
            self.stats.batches += 1
            self.stats.texts += len(texts)
            if self._on_batch:
                self._on_batch(len(texts), took)
            row = 0
            for job, first, end in pieces:
                if job.vectors is None:
                    job.vectors = np.empty((len(job.texts), vectors.shape[1]), vectors.dtype)
                job.vectors[first:end] = vectors[row:row + end - first]
                row += end - first
                job.finished += end - first
                if job.finished == len(job.texts) and not job.future.done():
                    job.future.set_result(job.vectors)
