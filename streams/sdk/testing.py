"""Running an agent's logic over a list of messages in memory: no Kafka, no Redis, milliseconds.

The harness calls the same :func:`streams.sdk.agent.apply` the worker calls, with the
keyed state in a dict instead of a changelog-backed table, so what passes here is what
the worker does with the same records, replays included (:meth:`Harness.replay`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic

from schemas import GpsPing, TelemetryBatch
from streams.sdk.agent import Agent, In, Out, TimerContext, apply


class Harness(Generic[In, Out]):
    """An agent with in-memory state; :meth:`send` records, read what they emitted."""

    def __init__(self, agent: Agent[In, Out]) -> None:
        self.agent = agent
        self.docs: dict[str, dict[str, Any]] = {}  # key → the document the worker's table would hold
        self.sent: list[In] = []
        self.emitted: list[Out] = []
        self.counts: dict[str, float] = {}
        self.dead_letters: list[tuple[In, BaseException]] = []

    def send(self, *values: In) -> list[Out]:
        """Process records in order, as one partition would; what they emitted (dead letters aside)."""
        out: list[Out] = []
        for value in values:
            offset = len(self.sent)
            self.sent.append(value)
            out += self._apply(value, offset)
        return out

    def replay(self, offset: int) -> list[Out]:
        """Process record ``offset`` again, as a worker does after a crash: it must emit what it emitted."""
        return self._apply(self.sent[offset], offset)

    def tick(self, now: datetime | None = None) -> list[Out]:
        """Run every timer once at ``now``."""
        out: list[Out] = []
        for _, timer in self.agent.timers:
            ctx: TimerContext[Out] = TimerContext(self.agent.name, lambda: list(self.docs.items()))
            timer(now or datetime.now(UTC), ctx)
            out += ctx.emitted
            self._count(ctx.counts)
        self.emitted += out
        return out

    def state(self, key: str) -> dict[str, Any]:
        """A key's state as the handler left it."""
        return dict(self.docs.get(key, {}).get("state", {}))

    def _apply(self, value: In, offset: int) -> list[Out]:
        key = self.agent.source.key(value)
        try:
            outcome = apply(self.agent, value, self.docs.get(key), ("harness", 0, offset))
        except Exception as exc:  # the worker dead-letters this record and goes on
            self.dead_letters.append((value, exc))
            return []
        self.docs[key] = outcome.state
        self.emitted += outcome.emitted
        self._count(outcome.counts)
        return list(outcome.emitted)

    def _count(self, counts: dict[str, float]) -> None:
        for k, n in counts.items():
            self.counts[k] = self.counts.get(k, 0.0) + n


def track(driver_id: str, points: Sequence[tuple[float, float] | tuple[float, float, float]],
          start: datetime | None = None, every_s: float = 1.0, seq0: int = 0,
          per_batch: int = 1) -> list[TelemetryBatch]:  # fmt: skip
    """Cleaned telemetry batches of a drive: ``(lat, lon)`` or ``(lat, lon, speed_mps)`` every ``every_s``."""
    t0 = start or datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    pings = [
        GpsPing(
            driver_id=driver_id,
            seq=seq0 + i,
            ts=t0 + timedelta(seconds=i * every_s),
            lat=p[0],
            lon=p[1],
            speed_mps=p[2] if len(p) > 2 else None,
        )
        for i, p in enumerate(points)
    ]
    return [TelemetryBatch(driver_id=driver_id, pings=chunk) for chunk in _chunks(pings, per_batch)]


def _chunks(items: list[GpsPing], n: int) -> Iterable[list[GpsPing]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
