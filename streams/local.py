"""A local backend for the built-in steps: a Runtime whose topics, tables and producer are in memory.

A step module builds its step from a :class:`streams.app.Runtime` (``step(rt)``, ``cleaner(rt)``),
so handing it a :class:`LocalRuntime` runs the very code the worker runs, with its tables in
dicts, what it sends kept in lists and no server behind it. :class:`StepHarness` feeds it
records; the steps' tests (and the SDK harness for installed agents) need no Kafka, Redis,
MongoDB or RabbitMQ. Steps that talk to Redis themselves are tested on the real stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.types import EventT

from core.config import Settings
from schemas import TelemetryBatch, encode
from schemas.contracts import TELEMETRY_RAW, Topic
from streams import pipeline
from streams.app import Runtime


@dataclass
class LocalTopic:
    """What a step sent to one topic, in order: (key, value)."""

    name: str
    sent: list[tuple[bytes | None, Any]] = field(default_factory=list)

    async def send(self, key: bytes | None = None, value: Any = None, **_: Any) -> None:
        self.sent.append((key, value))

    @property
    def values(self) -> list[Any]:
        return [v for _, v in self.sent]


class LocalApp:
    """The few parts of a Faust app that steps touch: timers (kept, not run) and the producer."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.produced: list[tuple[str, bytes | None, bytes]] = []
        self.producer = self

    def timer(self, interval: float, name: str | None = None) -> Callable[[Any], Any]:
        def register(fn: Any) -> Any:
            self.timers.append((interval, fn))
            return fn

        return register

    async def send(self, topic: str, key: bytes | None, value: bytes, **_: Any) -> None:
        self.produced.append((topic, key, value))


class LocalRuntime(Runtime):
    """:class:`Runtime` with in-memory topics (by project name) and tables (dicts)."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(cast(faust.App, LocalApp()), settings or Settings.model_construct())
        self.topics: dict[str, LocalTopic] = {}
        self.tables: dict[str, dict[bytes, Any]] = {}
        self.dead: list[tuple[Any, str, str | None]] = []

    @property
    def local_app(self) -> LocalApp:
        return cast(LocalApp, self.app)

    def topic(self, spec: Topic[Any], **kwargs: Any) -> faust.TopicT:
        return cast(faust.TopicT, self.topics.setdefault(spec.name, LocalTopic(spec.name)))

    def table(self, name: str, **kwargs: Any) -> Any:
        return self.tables.setdefault(name, {})

    async def dead_letter(self, message: Any, reason: str, exc: BaseException, step: str | None = None,
                          payload: bytes | str | None = None) -> None:  # fmt: skip
        self.dead.append((message, reason, step))

    def committed(self, source: tuple[str, int, int]) -> int | None:
        return None


@dataclass
class LocalMessage:
    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass
class LocalEvent:
    value: Any
    message: LocalMessage


class StepHarness:
    """Built-in telemetry steps over records in memory: ``clean`` first when given, then each step.

    Records are numbered as one partition's offsets, so :meth:`replay` hands a step the same
    source again, as a worker does after a crash.
    """

    def __init__(self, rt: LocalRuntime, cleaner: pipeline.CleanerFactory | None = None,
                 steps: Sequence[pipeline.StepFactory] = ()) -> None:  # fmt: skip
        self.rt = rt
        self._cleaner_factory = cleaner
        self._step_factories = list(steps)
        self._clean: pipeline.Cleaner | None = None
        self._steps: list[pipeline.Step] = []
        self.records: list[LocalEvent] = []

    async def _open(self) -> None:
        if self._clean is None and self._cleaner_factory is not None:
            self._clean = await self._cleaner_factory()
        if not self._steps and self._step_factories:
            self._steps = [await make() for make in self._step_factories]

    async def send(self, *batches: TelemetryBatch, topic: str = TELEMETRY_RAW.name) -> list[pipeline.Item]:
        """Process device batches as one partition's next records; the cleaned items."""
        events = []
        for b in batches:
            event = LocalEvent(b, LocalMessage(topic, 0, len(self.records), encode(b)))
            self.records.append(event)
            events.append(event)
        return await self._process(events)

    async def replay(self, offset: int) -> list[pipeline.Item]:
        """Record ``offset`` again: a replay-safe step must change nothing and emit what it emitted."""
        return await self._process([self.records[offset]])

    async def _process(self, events: list[LocalEvent]) -> list[pipeline.Item]:
        await self._open()
        evs = cast(Sequence[EventT], events)
        if self._clean is not None:
            items = await self._clean(evs)
        else:
            items = [pipeline.Item(e.value, (e.message.topic, 0, e.message.offset), cast(Any, e.message))
                     for e in events]  # fmt: skip
        for step in self._steps:
            await step(items)
        return items
