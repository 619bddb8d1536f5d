"""Fans stream results out to RabbitMQ for the notification layer.

Routing keys: ``driver.{id}.location`` (throttled per driver), ``driver.{id}.status``,
``driver.{id}.geofence`` and ``zone.{zone_id}.{enter|exit|dwell}``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from fleetstream.config import get_settings
from schemas import (
    BookingEvent,
    DriverStatusEvent,
    EtaUpdate,
    GeofenceEvent,
    TelemetryBatch,
    deterministic_event_id,
    encode,
)
from sinks.rabbitmq import Outgoing, RabbitSink
from streams import resources
from streams.app import app, topic
from streams.metrics import RECORDS
from streams.throttle import Throttle

clean_topic = topic("telemetry.clean")
geofence_topic = topic("geofence.events")
status_topic = topic("drivers.status")


def location_message(batch: TelemetryBatch) -> Outgoing:
    p = batch.pings[-1]
    body = {
        "type": "driver.location",
        "event_id": str(deterministic_event_id("location", p.driver_id, p.seq)),
        "driver_id": p.driver_id,
        "seq": p.seq,
        "ts": p.ts.isoformat(),
        "lat": p.lat,
        "lon": p.lon,
        "speed_mps": p.speed_mps,
        "heading_deg": p.heading_deg,
    }
    return Outgoing(f"driver.{p.driver_id}.location", orjson.dumps(body), body["event_id"], "driver.location")


@app.agent(clean_topic)
async def publish_locations(stream):  # type: ignore[no-untyped-def]
    sink = RabbitSink(await resources.rabbit())
    throttle = Throttle(get_settings().location_publish_interval_s)
    async for batches in stream.take(1000, within=0.1):
        RECORDS.labels("publish_locations").inc(len(batches))
        now = time.monotonic()
        newest: dict[str, TelemetryBatch] = {}
        for b in batches:
            if isinstance(b, TelemetryBatch):
                newest[b.driver_id] = b
        await sink.write([location_message(b) for d, b in newest.items() if throttle.allow(d, now)])


@app.agent(geofence_topic)
async def publish_geofence(stream):  # type: ignore[no-untyped-def]
    sink = RabbitSink(await resources.rabbit())
    async for events in stream.take(500, within=0.1):
        out = []
        for e in events:
            if isinstance(e, GeofenceEvent):
                kind = e.type.removeprefix("geofence.")
                body, mid = encode(e), str(e.event_id)
                out.append(Outgoing(f"zone.{e.zone_id}.{kind}", body, mid, e.type))
                out.append(Outgoing(f"driver.{e.driver_id}.geofence", body, mid, e.type))
        await sink.write(out)


@app.agent(status_topic)
async def publish_status(stream):  # type: ignore[no-untyped-def]
    sink = RabbitSink(await resources.rabbit())
    async for events in stream.take(500, within=0.1):
        await sink.write(
            [
                Outgoing(f"driver.{e.driver_id}.status", encode(e), str(e.event_id), e.type)
                for e in events
                if isinstance(e, DriverStatusEvent)
            ]
        )


booking_events_topic = topic("bookings.events")
eta_topic = topic("eta.updates")

# KEYS: replay stream, event-id → stream-id hash.  ARGV: event id, body, max length, ttl.
# Appends each notification once per audience; a replayed event gets its first id back.
APPEND_ONCE = """
local have = redis.call('HGET', KEYS[2], ARGV[1])
if have then return have end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], id)
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return id
"""
REPLAY_KEEP = 1000
REPLAY_TTL_S = 7 * 24 * 3600


def audiences(e: BookingEvent) -> list[str]:
    """Who hears of a booking event: its customer, the driver concerned, and staff."""
    out = [f"customer.{e.customer_id}", "staff.all"]
    if e.driver_id:
        out.append(f"driver.{e.driver_id}")
    return out


def booking_notification(e: BookingEvent) -> dict[str, object]:
    return {
        "type": e.type,
        "event_id": str(e.event_id),
        "at": e.occurred_at.isoformat(),
        "booking_id": str(e.booking_id),
        "status": e.status.value,
        "customer_id": e.customer_id,
        "driver_id": e.driver_id,
        "offer_deadline": e.offer_deadline.isoformat() if e.offer_deadline else None,
        "eta_s": e.eta_s,
        "reason": e.reason,
        "version": e.version,
    }


def eta_notification(e: EtaUpdate) -> dict[str, object]:
    return {"type": e.type, "event_id": str(e.event_id), "at": e.occurred_at.isoformat(),
            "booking_id": str(e.booking_id), "driver_id": e.driver_id, "phase": e.phase, "eta_s": e.eta_s,
            "distance_m": e.distance_m, "lat": e.lat, "lon": e.lon}  # fmt: skip


async def fan_out(r: Any, append: Any, sink: RabbitSink, items: list[tuple[list[str], dict[str, object]]]) -> None:
    """Each notification into its audiences' replay streams (one pipeline), then to RabbitMQ with the ids."""
    pending: list[tuple[str, dict[str, object]]] = []
    pipe = r.pipeline(transaction=False)
    for scopes, body in items:
        for scope in scopes:
            args = [body["event_id"], orjson.dumps(body), REPLAY_KEEP, REPLAY_TTL_S]
            await append(keys=[f"notify:{scope}", f"notify:ids:{scope}"], args=args, client=pipe)
            pending.append((scope, body))
    if not pending:
        return
    ids = await pipe.execute()
    out = []
    for (scope, body), sid in zip(pending, ids, strict=True):
        key, mid = f"{scope}.{body['type']}", f"{body['event_id']}:{scope}"
        out.append(Outgoing(key, orjson.dumps({**body, "id": sid}), mid, str(body["type"])))
    await sink.write(out)


@app.agent(booking_events_topic)
async def publish_bookings(stream):  # type: ignore[no-untyped-def]
    """Booking events to each audience's bounded replay stream in Redis, then to RabbitMQ.

    The replay stream id travels with the message: a reconnecting socket asks for what
    came after the last id it saw, and the notification layer drops anything not newer.
    """
    r = resources.redis()
    append = r.register_script(APPEND_ONCE)
    sink = RabbitSink(await resources.rabbit())
    async for events in stream.take(500, within=0.05):
        RECORDS.labels("publish_bookings").inc(len(events))
        items = [(audiences(e), booking_notification(e)) for e in events if isinstance(e, BookingEvent)]
        await fan_out(r, append, sink, items)


@app.agent(eta_topic)
async def publish_etas(stream):  # type: ignore[no-untyped-def]
    """ETA updates (with the driver's position) to the booking's customer and to staff."""
    r = resources.redis()
    append = r.register_script(APPEND_ONCE)
    sink = RabbitSink(await resources.rabbit())
    async for events in stream.take(500, within=0.05):
        RECORDS.labels("publish_etas").inc(len(events))
        items = [([f"customer.{e.customer_id}", "staff.all"], eta_notification(e)) for e in events
                 if isinstance(e, EtaUpdate) and e.customer_id]  # fmt: skip
        await fan_out(r, append, sink, items)
