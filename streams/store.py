"""Feeds the MongoDB sinks: ping history (per-batch buckets), latest driver state, geofence events.

Each agent takes a batch of records, writes it through an idempotent sink and only
then moves on, so offsets are committed after the write (at-least-once, no loss) and
a replay after SIGKILL inserts nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.types import TP, EventT, StreamT

from schemas import BookingEvent, GeofenceEvent, TelemetryBatch, decode
from schemas.contracts import BOOKING_EVENTS, GEOFENCE_EVENTS, TELEMETRY_CLEAN, TRIPS
from schemas.reports import MovementEvent
from schemas.track import bucket_from_record
from sinks.mongo import (
    DriverStateSink,
    InsertOnceSink,
    LatestSink,
    TrackSink,
    TripDaySink,
    ensure_indexes,
    track_bucket,
)
from sinks.track_index import TrackIndexSink
from streams import resources
from streams.app import Runtime
from streams.batching import batches
from streams.history import OpenBucket, OpenBuckets, after
from streams.metrics import RECORDS, STORED
from streams.pipeline import faulty, isolated
from streams.poison import isolate
from streams.throttle import Throttle


def latest_state(batch: TelemetryBatch) -> dict[str, Any]:
    return driver_doc(batch.pings[-1].model_dump())


def driver_doc(last: dict[str, Any]) -> dict[str, Any]:
    """The ``drivers`` document of a driver's last ping (a dict of GpsPing's fields)."""
    return {"_id": last["driver_id"], "seq": last["seq"], "ts": last["ts"], "lat": last["lat"], "lon": last["lon"],
            "speed_mps": last.get("speed_mps"), "heading_deg": last.get("heading_deg")}  # fmt: skip


async def buckets_of(
    records: Sequence[Any], refused: Callable[[Exception, Any], Awaitable[None]]
) -> tuple[list[tuple[Any, dict[str, Any], dict[str, Any]]], list[Any]]:
    """(record, bucket, latest state) per readable record, and the records that hold no pings.

    The fast reader first, else through the schema; what the schema refuses goes to ``refused``.
    """
    out, empty = [], []
    for event in records:
        raw = event.value
        fast = bucket_from_record(raw) if isinstance(raw, bytes) else None
        if fast is not None:
            out.append((event, fast[0], driver_doc(fast[1])))
            continue
        try:
            batch = decode(raw)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            await refused(exc, event.message)
            empty.append(event)
            continue
        if isinstance(batch, TelemetryBatch) and batch.pings:
            out.append((event, track_bucket(batch.driver_id, batch.pings), latest_state(batch)))
        else:
            empty.append(event)
    return out, empty


def geofence_doc(e: GeofenceEvent) -> dict[str, Any]:
    """A fence event once, by its event id (``geofence_events``)."""
    return {**e.model_dump(mode="python", exclude={"event_id"}), "_id": str(e.event_id)}


def booking_event_doc(e: BookingEvent) -> dict[str, Any]:
    """A booking transition once, by its event id (``booking_events``)."""
    return {**e.model_dump(mode="python", exclude={"event_id"}), "_id": str(e.event_id),
            "booking_id": str(e.booking_id), "command_id": str(e.command_id)}  # fmt: skip


def booking_doc(e: BookingEvent) -> dict[str, Any]:
    doc = e.model_dump(mode="python", exclude={"event_id", "type", "schema_version", "occurred_at", "command_id"})
    doc["booking_id"] = str(e.booking_id)
    return {**doc, "_id": str(e.booking_id), "updated_at": e.occurred_at}


def install(rt: Runtime) -> None:
    """The store agents: ping history, geofence events, bookings, trips and stops into MongoDB."""
    app = rt.app
    #: Raw bytes: the history sink packs pings straight from the JSON (``schemas.track.bucket_from_record``).
    #: ``value_type`` keeps Faust from handing this channel an event another agent decoded with the codec.
    clean_topic = rt.topic(TELEMETRY_CLEAN, value_serializer="raw", value_type=bytes)
    #: Per driver, the last seq of its history in MongoDB (``streams.history``): replays below it are skipped.
    flushed = rt.table("store-flushed", use_partitioner=True)  # written at flush time: the key's partition

    async def refused(exc: Exception, message: Any) -> None:
        await rt.dead_letter(message, "undecodable", exc)

    @app.agent(clean_topic, name="streams.store.store_pings")
    async def store_pings(stream: StreamT[Any]) -> None:
        """Every ping into history, in per-driver buckets held open across records (``streams.history``).

        The latest state per driver goes to MongoDB's ``drivers`` at most every
        ``driver_persist_interval_s`` (None: never): Redis holds the live state and the clean
        table the authoritative one, so this copy, an update per driver, is thinned.
        """
        s = rt.settings
        db = resources.db()
        await ensure_indexes(db)
        tracks, drivers = TrackSink(db), DriverStateSink(db)
        directory = TrackIndexSink(resources.redis())
        persist = s.driver_persist_interval_s
        throttle = Throttle(persist if persist is not None else 0.0)
        held = OpenBuckets(s.history_bucket_pings, s.history_flush_s)
        source = s.topic(TELEMETRY_CLEAN.name)

        def stored_seq(driver: str) -> int:
            last = flushed.get(driver.encode())
            return -1 if last is None else int(last)

        async def write(buckets: Sequence[OpenBucket]) -> None:
            queues: dict[str, list[dict[str, Any]]] = {}
            for b in buckets:  # a driver may fill several buckets in one batch (a catch-up)
                queues.setdefault(b.driver_id, []).append(b.doc())
            last: dict[str, int] = {}
            written: list[dict[str, Any]] = []
            while queues:  # one round per bucket of the driver with the most (usually one)
                heads = []
                for d, q in list(queues.items()):
                    # Floored at the stored seq too: a bucket opened before a collision taught the
                    # table what a crashed run had stored would otherwise write those pings again.
                    head = after(q.pop(0), max(last.get(d, -1), stored_seq(d)))
                    if not q:
                        del queues[d]
                    if head is not None:
                        heads.append(head)
                collided = await tracks.insert(heads)  # only a replay after a crash that lost a flush's table entry
                written += heads
                for doc in heads:
                    d = doc["driver_id"]
                    theirs = collided.get(doc["_id"])
                    last[d] = max(last.get(d, -1), doc["last_seq"] if theirs is None else theirs)
                    if theirs is not None and (rest := after(doc, theirs)) is not None:
                        queues.setdefault(d, []).insert(0, rest)  # the pings the stored bucket lacks
            await directory.write(written)  # after the documents exist: a listed bucket is always readable
            now = time.monotonic()
            if persist is not None:
                await drivers.write(
                    [b.state for b in buckets if b.state is not None and throttle.allow(b.driver_id, now)]
                )
            for d, seq in last.items():
                flushed[d.encode()] = seq
            STORED.inc(sum(b.n for b in buckets))

        async def dead(bucket: OpenBucket, exc: BaseException) -> None:
            for event in bucket.tokens:
                await rt.dead_letter(event.message, "step_failed", exc, step="store_pings")

        # Idle ticks a quarter second apart: a rebalance waits for the held records' acks.
        async for records in batches(stream, 500, 0.2, ack=False, idle=True, idle_s=0.25):
            RECORDS.labels("store_pings").inc(len(records))
            now = time.monotonic()
            read, empty = await buckets_of(records, refused)
            done = list(empty)
            for event, doc, state in read:
                if not held.add(doc, state, event, stored_seq(doc["driver_id"]), now):
                    done.append(event)
            # A rebalance moves a partition only once its records are acked (stream_wait_empty):
            # everything held is stored now, not when its bucket would have been due.
            due = held.due(now, everything=app.rebalancing)
            if due:
                mine = app.consumer.assignment()  # a bucket of a partition handed to another worker is theirs to store
                due = [b for b in due if TP(source, b.tokens[0].message.partition) in mine]
                await isolate(due, faulty(s, "store_pings", write), dead, s.server_retry_s, "store_pings")
                done += [event for b in due for event in b.tokens]
            for event in done:
                await stream.ack(event)

    @app.agent(rt.topic(GEOFENCE_EVENTS), name="streams.store.store_geofence_events")
    async def store_geofence_events(stream: StreamT[Any]) -> None:
        sink = InsertOnceSink(resources.db(), "geofence_events")

        async def write(records: Sequence[EventT]) -> None:
            await sink.write([geofence_doc(e) for e in (r.value for r in records) if isinstance(e, GeofenceEvent)])

        async for records in batches(stream, 500, 0.2):
            RECORDS.labels("store_geofence_events").inc(len(records))
            await isolated(rt, "store_geofence_events", records, write)

    @app.agent(rt.topic(BOOKING_EVENTS), name="streams.store.store_bookings")
    async def store_bookings(stream: StreamT[Any]) -> None:
        """Every booking event once (``booking_events``, by event id), each booking's latest version (``bookings``)."""
        db = resources.db()
        history, latest = InsertOnceSink(db, "booking_events"), LatestSink(db, "bookings", "version")

        async def write(records: Sequence[EventT]) -> None:
            mine = [e for e in (r.value for r in records) if isinstance(e, BookingEvent)]
            await history.write([booking_event_doc(e) for e in mine])
            await latest.write([booking_doc(e) for e in mine])

        async for records in batches(stream, 500, 0.2):
            RECORDS.labels("store_bookings").inc(len(records))
            await isolated(rt, "store_bookings", records, write)

    @app.agent(rt.topic(TRIPS, value_serializer="raw", value_type=bytes), name="streams.store.store_trips")
    async def store_trips(stream: StreamT[Any]) -> None:
        """The trips agent's trips and stops into their drivers' day documents (``trip_days``)."""
        sink = TripDaySink(resources.db())

        async def write(records: Sequence[EventT]) -> None:
            # A record that is no MovementEvent raises here: ``isolated`` dead-letters it alone.
            await sink.write([MovementEvent.model_validate_json(r.value) for r in records])

        async for records in batches(stream, 500, 0.2):
            RECORDS.labels("store_trips").inc(len(records))
            await isolated(rt, "store_trips", records, write)
