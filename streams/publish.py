"""Fans stream results out to RabbitMQ for the notification layer.

Routing keys: ``fleet.locations`` (each driver's latest location, throttled per driver,
batched per worker batch; a step of the telemetry agent, ``streams.pipeline``; sockets get
them as ``driver.{id}.location``), ``driver.{id}.status``, ``driver.{id}.geofence`` and
``zone.{zone_id}.{enter|exit|dwell}``; booking events through ``streams.fanout``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from faust.types import EventT, StreamT

from schemas import (
    BookingEvent,
    DriverStatusEvent,
    GeofenceEvent,
    TelemetryBatch,
    deterministic_event_id,
    encode,
)
from schemas.contracts import (
    BOOKING_EVENTS,
    DRIVER_STATUS,
    GEOFENCE_EVENTS,
    LOCATIONS_KEY,
    driver_geofence_key,
    status_key,
    zone_key,
)
from schemas.notifications import BookingNotice, DriverLocation, DriverLocations
from sinks.rabbitmq import Outgoing, RabbitSink
from sinks.zone_members import ZoneMembersSink
from streams import pipeline, resources
from streams.app import Runtime
from streams.batching import batches
from streams.fanout import Notifier, audiences
from streams.metrics import RECORDS
from streams.throttle import Throttle

#: Locations per batched message (about 250 bytes each).
LOCATIONS_PER_MESSAGE = 500


def location_messages(batches: list[TelemetryBatch]) -> list[Outgoing]:
    """The latest location of each driver of a worker batch, in as few messages as fit."""
    locations = [DriverLocation.of(b.pings[-1]) for b in batches]
    out = []
    for i in range(0, len(locations), LOCATIONS_PER_MESSAGE):
        chunk = locations[i : i + LOCATIONS_PER_MESSAGE]
        mid = str(deterministic_event_id("locations", *(str(loc.event_id) for loc in chunk)))
        body = DriverLocations(locations=chunk).model_dump_json().encode()
        out.append(Outgoing(LOCATIONS_KEY, body, mid, "driver.locations"))
    return out


def step(rt: Runtime) -> pipeline.StepFactory:
    """Each driver's latest location, throttled per driver, batched per worker batch."""
    interval = rt.settings.location_publish_interval_s

    async def make() -> pipeline.Step:
        sink = RabbitSink(await resources.rabbit(), confirm=False)  # live-only: never replayed, superseded by the next
        throttle = Throttle(interval)

        async def publish_locations(items: list[pipeline.Item]) -> None:
            now = time.monotonic()
            newest = {i.batch.driver_id: i.batch for i in items}
            await sink.write(location_messages([b for d, b in newest.items() if throttle.allow(d, now)]))

        return publish_locations

    return make


def install(rt: Runtime) -> None:
    """The agents that fan geofence, status and booking events out to RabbitMQ."""
    app = rt.app

    @app.agent(rt.topic(GEOFENCE_EVENTS), name="streams.publish.publish_geofence")
    async def publish_geofence(stream: StreamT[Any]) -> None:
        """Every fence event to RabbitMQ, and enters and exits to the zones' member sets in Redis."""
        sink = RabbitSink(await resources.rabbit())
        members = ZoneMembersSink(resources.redis())

        async def write(records: Sequence[EventT]) -> None:
            out = []
            fences = [e for e in (r.value for r in records) if isinstance(e, GeofenceEvent)]
            await members.write(fences)
            for e in fences:
                kind = e.type.removeprefix("geofence.")
                body, mid = encode(e), str(e.event_id)
                out.append(Outgoing(zone_key(e.zone_id, kind), body, mid, e.type))
                out.append(Outgoing(driver_geofence_key(e.driver_id), body, mid, e.type))
            await sink.write(out)

        async for records in batches(stream, 500, 0.1):
            await pipeline.isolated(rt, "publish_geofence", records, write)

    @app.agent(rt.topic(DRIVER_STATUS), name="streams.publish.publish_status")
    async def publish_status(stream: StreamT[Any]) -> None:
        sink = RabbitSink(await resources.rabbit())

        async def write(records: Sequence[EventT]) -> None:
            await sink.write([Outgoing(status_key(e.driver_id), encode(e), str(e.event_id), e.type)
                              for e in (r.value for r in records) if isinstance(e, DriverStatusEvent)])  # fmt: skip

        async for records in batches(stream, 500, 0.1):
            await pipeline.isolated(rt, "publish_status", records, write)

    @app.agent(rt.topic(BOOKING_EVENTS), name="streams.publish.publish_bookings")
    async def publish_bookings(stream: StreamT[Any]) -> None:
        """Booking events to their audiences (``streams.fanout``)."""
        notifier = await Notifier.open()

        async def write(records: Sequence[EventT]) -> None:
            await notifier.send([(audiences(e), BookingNotice.of(e)) for e in (r.value for r in records)
                                 if isinstance(e, BookingEvent)])  # fmt: skip

        async for records in batches(stream, 500, 0.05):
            RECORDS.labels("publish_bookings").inc(len(records))
            await pipeline.isolated(rt, "publish_bookings", records, write)
