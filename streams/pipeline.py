"""The live telemetry path: one agent, one pass over each batch of device records.

Clean, driver state, geofences, locations and ETAs are steps, each in its own module
(``streams.clean``, ``streams.driver_state``…); ``streams.worker`` lists them in order and
``fleetstream worker --agents`` decides which run. Whatever runs, one
agent reads the source once, decodes each record once and hands the cleaned batches to
every step. Five agents re-reading ``telemetry.clean`` cost a Kafka hop and a decode
per step (the live worker was CPU-bound on exactly that), and a ping took three Kafka
hops to reach a customer's socket as an ETA; now it takes one.

The source is ``telemetry.raw`` when the clean step runs here, else ``telemetry.clean``
(clean runs in another process). ``telemetry.clean`` is still written for the history
sink and for anyone's own agents. Steps after clean run concurrently on the same batch;
the batch's offsets are committed only after all of them returned (at-least-once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from faust.types import AgentT, EventT, Message, StreamT

from core.config import Settings
from schemas import TelemetryBatch, encode
from schemas.contracts import TELEMETRY_CLEAN, TELEMETRY_RAW
from streams.app import Runtime
from streams.batching import received_age, record_age, take_adaptive
from streams.metrics import PINGS, RECEIVED_AGE, RECORD_AGE, RECORDS, STEP_SECONDS
from streams.poison import isolate


@dataclass(frozen=True, slots=True)
class Item:
    """A cleaned batch and the source record it came from (replay memories key on ``source``)."""

    batch: TelemetryBatch
    source: tuple[str, int, int]  # topic, partition, offset
    message: Message  # the source record (dead letters name it)


Step = Callable[[list[Item]], Awaitable[None]]
Cleaner = Callable[[Sequence[EventT]], Awaitable[list[Item]]]
#: Opens a step's clients inside the worker's loop, once, and returns the step.
StepFactory = Callable[[], Awaitable[Step]]
CleanerFactory = Callable[[], Awaitable[Cleaner]]


def passthrough(events: Sequence[EventT]) -> list[Item]:
    """Records of ``telemetry.clean`` are already clean: only wrap them."""
    out = []
    for e in events:
        if isinstance(e.value, TelemetryBatch):
            m = e.message
            out.append(Item(e.value, (m.topic, m.partition, m.offset), m))
    return out


def timed(rt: Runtime, name: str, step: Step) -> Step:
    """``step`` timed, retried past server hiccups, and with a record it fails on dead-lettered alone."""
    hist = STEP_SECONDS.labels(name)
    budget = rt.settings.server_retry_s

    async def dead(item: Item, exc: BaseException) -> None:
        await rt.dead_letter(item.message, "step_failed", exc, step=name, payload=encode(item.batch))

    step = faulty(rt.settings, name, step)

    async def run(items: list[Item]) -> None:
        t0 = time.perf_counter()
        try:
            await isolate(items, step, dead, budget, name)  # type: ignore[arg-type]
        finally:
            hist.observe(time.perf_counter() - t0)

    return run


class InjectedFault(ValueError):
    """Raised by a step for the driver ``fault_poison`` names (fault-injection drills only)."""


def faulty(settings: Settings, name: str, step: Any) -> Any:
    """``step``, failing on the records of the driver ``settings.fault_poison[name]``, if any."""
    poison = settings.fault_poison.get(name)
    if poison is None:
        return step

    def driver_of(x: Any) -> str | None:
        value = x.batch if isinstance(x, Item) else getattr(x, "value", None)
        if isinstance(value, bytes):  # the history sink reads raw records
            try:
                return orjson.loads(value).get("driver_id")
            except (orjson.JSONDecodeError, AttributeError):
                return None
        return getattr(value if value is not None else x, "driver_id", None)  # or a history bucket

    async def run(xs: Any) -> Any:
        if any(driver_of(x) == poison for x in xs):
            raise InjectedFault(f"injected fault in step {name} for driver {poison}")
        return await step(xs)

    return run


async def isolated(rt: Runtime, name: str, records: Sequence[EventT],
                   write: Callable[[Sequence[EventT]], Awaitable[None]]) -> None:  # fmt: skip
    """``write`` the batch; a record whose data the server refuses is dead-lettered alone (``streams.poison``).

    A server that is away (restarting) is waited for, up to ``server_retry_s``: an agent
    writing to it must never crash the worker for a restart of seconds (a Redis restart
    stopped every live worker through the booking publisher, and the fleet's pings waited).
    """

    async def dead(event: EventT, exc: BaseException) -> None:
        await rt.dead_letter(event.message, "step_failed", exc, step=name)

    await isolate(records, faulty(rt.settings, name, write), dead, rt.settings.server_retry_s, name)


def isolated_cleaner(rt: Runtime, clean: Cleaner) -> Cleaner:
    """Clean, with a record it fails on dead-lettered alone (step ``clean``) and the rest of its batch cleaned."""
    budget = rt.settings.server_retry_s

    async def run(events: Sequence[EventT]) -> list[Item]:
        out: list[Item] = []

        async def some(evs: Sequence[EventT]) -> None:
            out.extend(await clean(evs))

        async def dead(event: EventT, exc: BaseException) -> None:
            await rt.dead_letter(event.message, "step_failed", exc, step="clean")

        await isolate(events, faulty(rt.settings, "clean", some), dead, budget, "clean")
        return out

    return run


def build(rt: Runtime, cleaner: CleanerFactory | None, steps: Sequence[tuple[str, StepFactory]]) -> AgentT | None:
    """Define the telemetry agent: clean first (if given), then ``steps`` concurrently, started in order.

    Nothing given: no agent.
    """
    s, app = rt.settings, rt.app
    if cleaner is None and not steps:
        return None
    source = rt.topic(TELEMETRY_RAW if cleaner is not None else TELEMETRY_CLEAN)

    AGE, RECEIVED = RECORD_AGE.labels("telemetry"), RECEIVED_AGE.labels("telemetry")

    @app.agent(source, name="streams.pipeline.telemetry")
    async def telemetry(stream: StreamT[Any]) -> None:
        clean = isolated_cleaner(rt, await cleaner()) if cleaner is not None else None
        running = [timed(rt, n, await make()) for n, make in steps]
        clean_time, batch_time = STEP_SECONDS.labels("clean"), STEP_SECONDS.labels("batch")
        batches = take_adaptive(stream, s.telemetry_max_batch, s.telemetry_linger_ms / 1000,
                                s.telemetry_busy_linger_ms / 1000, s.telemetry_behind_ms / 1000)  # fmt: skip
        async for events in batches:
            RECORDS.labels("telemetry").inc(len(events))
            AGE.observe(record_age(events[0]))
            if (received := received_age(events[0])) is not None:
                RECEIVED.observe(received)
            t0 = time.perf_counter()
            items = await clean(events) if clean is not None else passthrough(events)
            clean_time.observe(time.perf_counter() - t0)
            if not items:
                continue
            PINGS.labels("telemetry").inc(sum(len(i.batch.pings) for i in items))
            await asyncio.gather(*(step(items) for step in running))  # in order: eta's round trips go out first
            batch_time.observe(time.perf_counter() - t0)

    return telemetry
