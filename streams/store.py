"""Feeds the MongoDB sinks: ping history (per-batch buckets), latest driver state, geofence events.

Each agent takes a batch of records, writes it through an idempotent sink and only
then moves on, so offsets are committed after the write (at-least-once, no loss) and
a replay after SIGKILL inserts nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.types import EventT

from fleetstream.config import get_settings
from schemas import BookingEvent, GeofenceEvent, TelemetryBatch, decode
from schemas.track import bucket_from_record
from sinks.mongo import DriverStateSink, InsertOnceSink, LatestSink, ensure_indexes, track_bucket
from sinks.track_index import TrackIndexSink
from streams import resources
from streams.app import app, dead_letter, topic
from streams.batching import batches
from streams.metrics import RECORDS, STORED
from streams.pipeline import faulty
from streams.poison import isolate
from streams.throttle import Throttle

#: Raw bytes: the history sink packs pings straight from the JSON (``schemas.track.bucket_from_record``).
#: ``value_type`` keeps Faust from handing this channel an event another agent decoded with the codec.
clean_topic = topic("telemetry.clean", value_serializer="raw", value_type=bytes)
geofence_topic = topic("geofence.events")
booking_events_topic = topic("bookings.events")


def latest_state(batch: TelemetryBatch) -> dict[str, Any]:
    return driver_doc(batch.pings[-1].model_dump())


def driver_doc(last: dict[str, Any]) -> dict[str, Any]:
    """The ``drivers`` document of a driver's last ping (a dict of GpsPing's fields)."""
    return {"_id": last["driver_id"], "seq": last["seq"], "ts": last["ts"], "lat": last["lat"], "lon": last["lon"],
            "speed_mps": last.get("speed_mps"), "heading_deg": last.get("heading_deg")}  # fmt: skip


async def buckets_of(records: list[Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(bucket, latest state) per record: the fast reader, else through the schema, else a dead letter."""
    out = []
    for event in records:
        raw = event.value
        fast = bucket_from_record(raw) if isinstance(raw, bytes) else None
        if fast is not None:
            out.append((fast[0], driver_doc(fast[1])))
            continue
        try:
            batch = decode(raw)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            await clean_topic.on_value_decode_error(exc, event.message)
            continue
        if isinstance(batch, TelemetryBatch):
            out.append((track_bucket(batch.driver_id, batch.pings), latest_state(batch)))
    return out


async def isolated(name: str, records: Sequence[EventT], write: Callable[[Sequence[EventT]], Awaitable[None]]) -> None:
    """``write`` the batch; a record whose data the server refuses is dead-lettered alone (``streams.poison``)."""

    async def dead(event: EventT, exc: BaseException) -> None:
        await dead_letter(event.message, "step_failed", exc, step=name)

    await isolate(records, faulty(name, write), dead, get_settings().server_retry_s, name)


@app.agent(clean_topic)
async def store_pings(stream):  # type: ignore[no-untyped-def]
    """Every ping into history; the latest state per driver at most every ``driver_persist_interval_s``.

    Redis holds the live state; MongoDB's copy is for recovery and reporting, and its
    per-driver updates are the most expensive write FerretDB does, so they are thinned.
    """
    db = resources.db()
    await ensure_indexes(db)
    tracks, drivers = InsertOnceSink(db, "tracks"), DriverStateSink(db)
    directory = TrackIndexSink(resources.redis())
    throttle = Throttle(get_settings().driver_persist_interval_s)

    async def write(records: Sequence[EventT]) -> None:
        read = await buckets_of(records)
        buckets = [bucket for bucket, _ in read]
        await tracks.write(buckets)
        await directory.write(buckets)  # after the documents exist: a listed bucket is always readable
        now = time.monotonic()
        newest = {state["_id"]: state for _, state in read}
        await drivers.write([state for d, state in newest.items() if throttle.allow(d, now)])
        STORED.inc(sum(bucket["n"] for bucket in buckets))

    async for records in batches(stream, 500, 0.2):
        RECORDS.labels("store_pings").inc(len(records))
        await isolated("store_pings", records, write)


@app.agent(geofence_topic)
async def store_geofence_events(stream):  # type: ignore[no-untyped-def]
    sink = InsertOnceSink(resources.db(), "geofence_events")

    async def write(records: Sequence[EventT]) -> None:
        await sink.write([
            {**e.model_dump(mode="python", exclude={"event_id"}), "_id": str(e.event_id)}
            for e in (r.value for r in records)
            if isinstance(e, GeofenceEvent)
        ])  # fmt: skip

    async for records in batches(stream, 500, 0.2):
        RECORDS.labels("store_geofence_events").inc(len(records))
        await isolated("store_geofence_events", records, write)


def booking_doc(e: BookingEvent) -> dict[str, Any]:
    doc = e.model_dump(mode="python", exclude={"event_id", "type", "schema_version", "occurred_at", "command_id"})
    doc["booking_id"] = str(e.booking_id)
    return {**doc, "_id": str(e.booking_id), "updated_at": e.occurred_at}


@app.agent(booking_events_topic)
async def store_bookings(stream):  # type: ignore[no-untyped-def]
    """Every booking event once (``booking_events``, by event id) and each booking's latest version (``bookings``)."""
    db = resources.db()
    history, latest = InsertOnceSink(db, "booking_events"), LatestSink(db, "bookings", "version")

    async def write(records: Sequence[EventT]) -> None:
        mine = [e for e in (r.value for r in records) if isinstance(e, BookingEvent)]
        await history.write([{**e.model_dump(mode="python", exclude={"event_id"}), "_id": str(e.event_id),
                              "booking_id": str(e.booking_id), "command_id": str(e.command_id)}
                             for e in mine])  # fmt: skip
        await latest.write([booking_doc(e) for e in mine])

    async for records in batches(stream, 500, 0.2):
        RECORDS.labels("store_bookings").inc(len(records))
        await isolated("store_bookings", records, write)
