"""MongoDB sinks: ping history, latest driver state, geofence events.

Ping history is stored in per-driver buckets: one document per cleaned batch, ``_id``
``{driver}:{first_seq}``, holding its pings packed in order (``schemas.track``). A replayed batch has the same id
and is skipped, and the server writes one document per device batch instead of one per
ping (about 50x fewer writes at typical batch sizes: FerretDB on SQLite topped out
near 3,000 single-ping inserts/s on our 2-core machines, see benchmarks/).

Every write is idempotent by construction: buckets and events use a natural ``_id``
and are inserted unordered with duplicate-key errors ignored; driver state is only
updated where the stored sequence number is older, so an old replayed state never
overwrites a newer one. Only operations that both MongoDB and
FerretDB v1 support are used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import AutoReconnect, BulkWriteError, NetworkTimeout

from schemas.reports import MovementEvent, day_of, trip_day_id
from schemas.track import bucket_pings, track_bucket
from sinks.base import BatchSink

__all__ = [
    "DriverStateSink",
    "InsertOnceSink",
    "LatestSink",
    "TrackSink",
    "TripDaySink",
    "ensure_indexes",
    "read_track",
    "track_bucket",
]

DUPLICATE_KEY = 11000


async def ensure_indexes(db: AsyncIOMotorDatabase) -> None:
    """Created at start by every process that writes or reads; creating twice is a no-op."""
    await db.tracks.create_index([("driver_id", ASCENDING), ("first_seq", ASCENDING)], name="driver_seq")
    await db.tracks.create_index([("driver_id", ASCENDING), ("t1", ASCENDING)], name="driver_t1")
    await db.geofence_events.create_index([("driver_id", ASCENDING), ("at", DESCENDING)], name="driver_at")
    await db.geofence_events.create_index([("zone_id", ASCENDING), ("at", DESCENDING)], name="zone_at")
    await db.devices.create_index([("driver_id", ASCENDING)], name="driver")
    await db.bookings.create_index([("customer_id", ASCENDING), ("created_at", DESCENDING)], name="customer")
    await db.bookings.create_index([("driver_id", ASCENDING), ("created_at", DESCENDING)], name="driver")
    await db.booking_events.create_index([("booking_id", ASCENDING), ("version", ASCENDING)], name="booking")
    await db.users.create_index([("email", ASCENDING)], name="email", unique=True)
    await db.refresh_tokens.create_index([("family", ASCENDING)], name="family")


async def read_track(
    db: AsyncIOMotorDatabase,
    driver_id: str,
    start: Any = None,
    end: Any = None,
    cursor: int = -1,
    limit: int = 1000,
    redis: Any = None,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """At most ``limit`` pings of a driver with ``start <= ts < end``, in seq order or newest first.

    ``cursor`` is where the previous page ended: oldest first, pings with a greater seq;
    newest first, pings with a smaller one (-1: from the start). With ``redis`` the bucket
    directory (``sinks.track_index``) picks the buckets page by page and they are fetched
    by ``_id``, so a read costs its page, not the driver's history; without it, or for a
    driver it does not know, a query on the ``driver_seq`` index does.
    """
    from sinks.track_index import bucket_pages, fetch_buckets

    out: list[dict[str, Any]] = []
    seen: set[int] = set()

    def take(doc: dict[str, Any]) -> None:
        for p in bucket_pings(doc):
            seq = p["seq"]
            if cursor >= 0 and (seq >= cursor if newest_first else seq <= cursor):
                continue
            if seq in seen or (start is not None and p["ts"] < start) or (end is not None and p["ts"] >= end):
                continue
            seen.add(seq)
            out.append(p)

    pages = await bucket_pages(redis, driver_id, start, end, cursor, newest_first) if redis is not None else None
    if pages is not None:
        async for ids in pages:
            for doc in await fetch_buckets(db, ids):
                take(doc)
            if len(out) >= limit:
                break
    else:
        q: dict[str, Any] = {"driver_id": driver_id}
        if cursor >= 0:
            q["first_seq" if newest_first else "last_seq"] = {"$lt": cursor} if newest_first else {"$gt": cursor}
        if start is not None:  # t0/t1 are BSON dates (milliseconds): compare at that precision
            q["t1"] = {"$gte": start.replace(microsecond=start.microsecond // 1000 * 1000)}
        if end is not None:
            q["t0"] = {"$lt": end}
        order = -1 if newest_first else 1
        async for doc in db.tracks.find(q, {"pings": 1, "fmt": 1}).sort("first_seq", order).batch_size(64):
            take(doc)
            if len(out) >= limit:
                break
    out.sort(key=lambda p: p["seq"], reverse=newest_first)
    return out[:limit]


def _only_duplicates(exc: BulkWriteError) -> bool:
    errors = exc.details.get("writeErrors", [])
    return all(e.get("code") == DUPLICATE_KEY for e in errors) and not exc.details.get("writeConcernErrors")


#: One MongoDB write at a time per process. FerretDB on SQLite has one writer per database
#: anyway, and twice in a row the whole server stopped answering (all but ``ping``) while
#: two bulk writes of the store worker were in flight at once; serialising them costs
#: nothing there. On MongoDB it costs the store's agents their write overlap.
WRITE_LOCK = asyncio.Lock()


class InsertOnceSink(BatchSink[dict[str, Any]]):
    """Insert documents with a natural ``_id``; a replayed document is skipped by the server."""

    retry_on = (AutoReconnect, NetworkTimeout, ConnectionError, OSError)
    max_chunk = 200  # tested size on FerretDB v1 (see DriverStateSink for its update limit)

    def __init__(self, db: AsyncIOMotorDatabase, collection: str) -> None:
        self.coll = db[collection]
        self.name = f"mongo.{collection}"

    async def write_chunk(self, items: Sequence[dict[str, Any]]) -> None:
        try:
            async with WRITE_LOCK:
                await self.coll.insert_many(list(items), ordered=False)
        except BulkWriteError as exc:
            if not _only_duplicates(exc):
                raise
            self.skipped([items[e["index"]]["_id"] for e in exc.details.get("writeErrors", [])])

    def skipped(self, ids: list[Any]) -> None:
        """The ``_id``s of a chunk that were stored already (a replay)."""


class TrackSink(InsertOnceSink):
    """History buckets: inserted once, and which of them were already stored (``streams.history``)."""

    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        super().__init__(db, "tracks")
        self.collided: list[str] = []

    def skipped(self, ids: list[Any]) -> None:
        self.collided += ids

    async def insert(self, docs: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Insert ``docs``; for those whose ``_id`` was taken, the stored bucket's last seq."""
        self.collided = []
        await self.write(docs)
        # Rare: only a replay after a crash collides. ``_id`` point lookups, which use the index.
        found = await asyncio.gather(*(self.coll.find_one({"_id": i}, {"last_seq": 1}) for i in self.collided))
        return {d["_id"]: int(d["last_seq"]) for d in found if d is not None}


class LatestSink(BatchSink[dict[str, Any]]):
    """Latest document per ``_id``, the highest ``version_field`` wins (replays cannot move one back).

    Read the stored versions of the chunk (``_id`` lookups), then upsert by ``_id``
    alone the documents that are newer. The guard lives in the read, not in the update
    filter: on FerretDB v1 any filter beyond ``_id`` equality scans the collection (a
    guarded update cost 9.5 ms of server CPU at 500 drivers, ``_id`` alone 1.9 ms), and
    a guarded upsert that loses answers with an error pymongo cannot parse. Each key has
    one writer (its partition's owner in the store group), so nothing writes between the
    read and the update except during a rebalance hand-over; the next write repairs that.
    """

    retry_on = (AutoReconnect, NetworkTimeout, ConnectionError, OSError)
    # FerretDB v1.24 never answers an update batch of 100 or more operations (the
    # connection hangs, then the whole server); MongoDB splits batches itself anyway.
    max_chunk = 90

    #: Versions this process last read or wrote, per ``_id``: only ids it has not seen yet are read.
    #: On FerretDB the ``$in`` read scans the collection; with it on every chunk the driver-state
    #: sink's reads were a sixth of FerretDB's CPU at 25,000 pings/s (perf). The same single-writer
    #: assumption as above: after a hand-over the next write repairs what a stale entry let through.
    max_known = 200_000

    def __init__(self, db: AsyncIOMotorDatabase, collection: str, version_field: str) -> None:
        self.coll = db[collection]
        self.field = version_field
        self.name = f"mongo.{collection}"
        self.known: dict[str, Any] = {}

    async def write_chunk(self, items: Sequence[dict[str, Any]]) -> None:
        f = self.field
        latest: dict[str, dict[str, Any]] = {}
        for doc in items:
            cur = latest.get(doc["_id"])
            if cur is None or doc[f] >= cur[f]:
                latest[doc["_id"]] = doc
        known = self.known
        unseen = [i for i in latest if i not in known]
        if unseen:
            # ``_id`` point lookups: they use the ``_id`` index (on our FerretDB build too, see
            # ``fleetstream.stack.services.FerretDB``), whatever the collection's size.
            found = await asyncio.gather(*(self.coll.find_one({"_id": i}, {f: 1}) for i in unseen))
            known.update((d["_id"], d.get(f, -1)) for d in found if d is not None)
        newer = [(i, d) for i, d in latest.items() if i not in known or known[i] < d[f]]
        if newer:
            async with WRITE_LOCK:
                await self.coll.bulk_write([UpdateOne({"_id": i}, {"$set": d}, upsert=True) for i, d in newer],
                                           ordered=False)  # fmt: skip
            if len(known) >= self.max_known:
                known.clear()
            known.update((i, d[f]) for i, d in newer)


class DriverStateSink(LatestSink):
    """Latest state per driver, by ping sequence number."""

    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        super().__init__(db, "drivers", "seq")


class TripDaySink(BatchSink[MovementEvent]):
    """Trips and stops into their driver's day document, each under its id, the latest event's data.

    One update by ``_id`` per day document (``$set`` of ``trips.<first seq>`` fields), so a
    replay writes the same values again. A key's events arrive in order from one partition,
    and a replay after a crash re-sends the rest of them in order, so the last write is the
    latest; within a chunk the greatest ``rev`` wins.
    """

    retry_on = (AutoReconnect, NetworkTimeout, ConnectionError, OSError)
    max_chunk = 90  # FerretDB v1.24's update-batch limit (see LatestSink)
    name = "mongo.trip_days"

    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.coll = db.trip_days

    async def write_chunk(self, items: Sequence[MovementEvent]) -> None:
        docs: dict[str, dict[str, Any]] = {}
        revs: dict[str, int] = {}
        for e in items:
            item = e.trip or e.stop
            if item is None:
                continue
            field = f"{'trips' if e.trip else 'stops'}.{item.first_seq}"
            doc_id = trip_day_id(e.driver_id, day_of(e))
            if revs.get(f"{doc_id}/{field}", -1) > e.rev:
                continue
            revs[f"{doc_id}/{field}"] = e.rev
            fields = docs.setdefault(doc_id, {"driver_id": e.driver_id, "day": day_of(e).isoformat()})
            fields[field] = {**item.model_dump(mode="python"), "rev": e.rev, "closed": e.closed}
        if docs:
            async with WRITE_LOCK:
                await self.coll.bulk_write([UpdateOne({"_id": i}, {"$set": f}, upsert=True) for i, f in docs.items()],
                                           ordered=False)  # fmt: skip
