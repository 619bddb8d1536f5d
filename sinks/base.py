"""One base for every sink: chunked batches, bounded retries with backoff, metrics.

A stream agent hands a sink a batch it took from Kafka (``stream.take``) and awaits
``write``; the source offsets are committed only after ``write`` returned, so a crash
replays the batch and idempotent writes make the replay harmless (at-least-once in,
exactly-once effect). Back-pressure is natural: while a sink retries, its agent does
not take more records, and Faust stops fetching once its bounded buffers are full.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram

T = TypeVar("T")
log = logging.getLogger(__name__)

SINK_BATCH = Histogram(
    "fleetstream_sink_batch_size", "Items per sink write", ["sink"], buckets=(1, 10, 50, 100, 250, 500, 1000, 5000)
)
SINK_LATENCY = Histogram("fleetstream_sink_write_seconds", "Duration of one sink write (with retries)", ["sink"])
SINK_ITEMS = Counter("fleetstream_sink_items_total", "Items written by a sink", ["sink"])
SINK_RETRIES = Counter("fleetstream_sink_retries_total", "Sink write attempts that failed and were retried", ["sink"])


class SinkError(RuntimeError):
    """A batch could not be written within the retry budget."""


class BatchSink(Generic[T]):
    """Subclasses implement :meth:`write_chunk`, which must be idempotent."""

    name = "sink"
    max_chunk = 1000
    #: None retries a retryable error forever: the agent pauses (back-pressure) instead of
    #: crashing, because a crashed Faust agent does not get its un-acked batch back until
    #: the worker restarts.
    max_attempts: int | None = None
    base_delay_s = 0.05
    max_delay_s = 2.0
    retry_on: tuple[type[BaseException], ...] = (ConnectionError, OSError, asyncio.TimeoutError)

    async def write_chunk(self, items: Sequence[T]) -> None:
        raise NotImplementedError

    async def write(self, items: Sequence[T]) -> None:
        if not items:
            return
        t0 = time.perf_counter()
        for start in range(0, len(items), self.max_chunk):
            chunk = items[start : start + self.max_chunk]
            await self._with_retries(chunk)
            SINK_BATCH.labels(self.name).observe(len(chunk))
            SINK_ITEMS.labels(self.name).inc(len(chunk))
        SINK_LATENCY.labels(self.name).observe(time.perf_counter() - t0)

    async def _with_retries(self, chunk: Sequence[T]) -> None:
        delay = self.base_delay_s
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.write_chunk(chunk)
                return
            except self.retry_on as exc:
                if self.max_attempts is not None and attempt >= self.max_attempts:
                    raise SinkError(f"{self.name}: giving up after {attempt} attempts: {exc}") from exc
                SINK_RETRIES.labels(self.name).inc()
                log.warning("%s: write failed (%s); retry %d in %.2fs", self.name, exc, attempt, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay_s)
