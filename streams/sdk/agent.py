"""Declaring an agent: what it reads, what it emits, and its handler.

A handler is plain logic: ``handle(value, ctx)`` reads the key's state from ``ctx.state``,
changes it in place and calls ``ctx.emit(event)``. It does no I/O, so the same code runs
in the worker, in the in-memory harness (``streams.sdk.testing``) and in a backtest, and
the runtime can make it replay-safe on its own: what a source record emitted is kept with
the key's state, and a record read again after a crash emits exactly that again.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from schemas import BookingEvent, DriverStatusEvent, GeofenceEvent, TelemetryBatch
from schemas.base import IDENT_RE
from schemas.contracts import BOOKING_EVENTS, DRIVER_STATUS, GEOFENCE_EVENTS, TELEMETRY_CLEAN, Topic
from streams.replay import produced_before, remember, seen_before
from streams.sdk.windows import Closed, Hopping, WindowState

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


@dataclass(frozen=True)
class Source(Generic[In]):
    """A stream an agent can read, with the model its records decode to and the key they carry."""

    topic: Topic[In]
    model: type[In]
    key: Callable[[In], str]


#: Cleaned telemetry: one device batch per record, keyed by driver id, pings in seq order.
TELEMETRY: Source[TelemetryBatch] = Source(TELEMETRY_CLEAN, TelemetryBatch, lambda b: b.driver_id)
#: Booking transitions, keyed by booking id.
BOOKINGS: Source[BookingEvent] = Source(BOOKING_EVENTS, BookingEvent, lambda e: str(e.booking_id))
#: A driver coming online, going offline.
DRIVER_STATUS_EVENTS: Source[DriverStatusEvent] = Source(DRIVER_STATUS, DriverStatusEvent, lambda e: e.driver_id)
#: Enter, exit and dwell per driver and zone, keyed by driver id.
GEOFENCES: Source[GeofenceEvent] = Source(GEOFENCE_EVENTS, GeofenceEvent, lambda e: e.driver_id)


class Context(Generic[Out]):
    """What a handler is given for one record: its key's state, a way to emit, windows and counters."""

    def __init__(self, agent: str, key: str, state: dict[str, Any]) -> None:
        self.agent = agent
        self.key = key
        #: This key's state: JSON values, kept in a changelog-backed table (survives restarts).
        self.state = state
        self.emitted: list[Out] = []
        self.counts: dict[str, float] = {}

    def emit(self, event: Out) -> None:
        """An event to the agent's output topic (and to its audiences' sockets, if it has any)."""
        self.emitted.append(event)

    def window(self, name: str, window: Hopping, reduce: Callable[[Any, Any], Any], initial: Any = None) -> WindowState:
        """The key's window ``name``: ``.add(at, value)`` returns the windows that closed."""
        windows = self.state.setdefault("_windows", {})
        return WindowState(windows.setdefault(name, {}), window, reduce, initial)

    def count(self, name: str, n: float = 1.0) -> None:
        """Add to a counter exported as ``fleetstream_sdk_events_total{agent=…, name=…}``."""
        self.counts[name] = self.counts.get(name, 0.0) + n


class TimerContext(Generic[Out]):
    """What a timer is given: read-only views of this worker's keys' states, emit and count."""

    def __init__(self, agent: str, states: Callable[[], Iterable[tuple[str, dict[str, Any]]]]) -> None:
        self.agent = agent
        self._states = states
        self.emitted: list[Out] = []
        self.counts: dict[str, float] = {}

    def states(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(key, state) of every key this worker holds (its partitions); copies, changes are not kept."""
        for key, doc in self._states():
            yield key, copy.deepcopy(doc.get("state", {}))

    def emit(self, event: Out) -> None:
        """An event to the output topic. Give it a deterministic ``event_id`` if a rerun must not repeat it."""
        self.emitted.append(event)

    def count(self, name: str, n: float = 1.0) -> None:
        self.counts[name] = self.counts.get(name, 0.0) + n


Handler = Callable[[Any, Context[Any]], None]
Timer = Callable[[datetime, TimerContext[Any]], None]


@dataclass
class Agent(Generic[In, Out]):
    """An agent of the SDK: a name, a source, an output schema, and a handler (``@agent.handle``).

    ``audiences`` (optional) names who hears of each emitted event on the notification
    socket (``schemas.contracts``: ``driver_audience(id)``, ``STAFF``…); the event then
    needs a ``type`` and an ``event_id``.
    """

    name: str
    source: Source[In]
    output: type[Out]
    description: str = ""
    audiences: Callable[[Out], list[str]] | None = None
    handler: Handler | None = None
    timers: list[tuple[float, Timer]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not IDENT_RE.match(self.name):
            raise ValueError(f"agent name {self.name!r}: use letters, digits, _ and - (it names topics and tables)")
        if "event_id" not in self.output.model_fields:
            raise ValueError(f"{self.output.__name__} needs an event_id: consumers drop replays by it")

    def handle(self, fn: Callable[[In, Context[Out]], None]) -> Callable[[In, Context[Out]], None]:
        """Decorate the handler: ``def on(value: In, ctx: Context[Out]) -> None``."""
        self.handler = fn
        return fn

    def every(self, seconds: float) -> Callable[[Timer], Timer]:
        """Decorate a timer run every ``seconds`` on each worker: ``def tick(now, ctx: TimerContext) -> None``."""

        def register(fn: Timer) -> Timer:
            self.timers.append((seconds, fn))
            return fn

        return register

    @property
    def topic(self) -> Topic[Out]:
        """The agent's own output topic (in the settings' namespace, like every project topic)."""
        return Topic(f"agents.{self.name}", self.source.topic.key, self.output, self.description or self.name)


@dataclass(frozen=True)
class Outcome(Generic[Out]):
    """What one record did: the key's new state, the events it emitted, whether it was a replay."""

    state: dict[str, Any]
    emitted: list[Out]
    counts: dict[str, float]
    replayed: bool = False


def apply(agent: Agent[Any, Out], value: Any, stored: dict[str, Any] | None, source: tuple[str, int, int] | None,
          committed: int | None = None) -> Outcome[Out]:  # fmt: skip
    """Run the handler for one record against its key's stored document; replay-safe.

    ``stored`` is ``{"state": …, "recent": […]}`` as kept in the agent's table. A record
    whose ``source`` (topic, partition, offset) is among ``recent`` was processed before a
    crash: its events are returned again, unchanged, and the state is left alone. One from
    further back (at or below the highest offset taken, ``streams.replay.seen_before``) emits
    nothing: its events went out when it was first taken.
    """
    doc = stored or {}
    if source is not None and (before := produced_before(doc, source)) is not None:
        events = [agent.output.model_validate_json(e) for e in before]
        return Outcome(doc, events, {}, replayed=True)
    if source is not None and seen_before(doc, source):  # taken before, beyond what ``recent`` keeps
        return Outcome(doc, [], {}, replayed=True)  # applied to today's state it would count twice
    if agent.handler is None:
        raise ValueError(f"agent {agent.name} has no handler (decorate one with @agent.handle)")
    ctx: Context[Out] = Context(agent.name, agent.source.key(value), copy.deepcopy(doc.get("state", {})))
    agent.handler(value, ctx)
    new = {"state": ctx.state, "recent": doc.get("recent", [])}
    if source is not None:
        new = remember(new, source, [e.model_dump_json() for e in ctx.emitted], committed)
    return Outcome(new, ctx.emitted, ctx.counts)


__all__ = [
    "BOOKINGS",
    "DRIVER_STATUS_EVENTS",
    "GEOFENCES",
    "TELEMETRY",
    "Agent",
    "Closed",
    "Context",
    "Outcome",
    "Source",
    "TimerContext",
    "apply",
]
