"""MongoDB sinks: ping history, latest driver state, geofence events.

Every write is idempotent by construction: pings and events use a natural ``_id``
(``driver:seq``, ``event_id``) and are inserted unordered with duplicate-key errors
ignored; driver state is an upsert guarded by the ping's sequence number, so an old
replayed state never overwrites a newer one. Only operations that both MongoDB and
FerretDB v1 support are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import AutoReconnect, BulkWriteError, NetworkTimeout

from sinks.base import BatchSink

DUPLICATE_KEY = 11000


async def ensure_indexes(db: AsyncIOMotorDatabase) -> None:
    """Created at start by every process that writes or reads; creating twice is a no-op."""
    await db.pings.create_index([("driver_id", ASCENDING), ("seq", ASCENDING)], name="driver_seq", unique=True)
    await db.pings.create_index([("driver_id", ASCENDING), ("ts", ASCENDING)], name="driver_ts")
    await db.geofence_events.create_index([("driver_id", ASCENDING), ("at", DESCENDING)], name="driver_at")
    await db.geofence_events.create_index([("zone_id", ASCENDING), ("at", DESCENDING)], name="zone_at")
    await db.devices.create_index([("driver_id", ASCENDING)], name="driver")


def _only_duplicates(exc: BulkWriteError) -> bool:
    errors = exc.details.get("writeErrors", [])
    return all(e.get("code") == DUPLICATE_KEY for e in errors) and not exc.details.get("writeConcernErrors")


class InsertOnceSink(BatchSink[dict[str, Any]]):
    """Insert documents with a natural ``_id``; a replayed document is skipped by the server."""

    retry_on = (AutoReconnect, NetworkTimeout, ConnectionError, OSError)

    def __init__(self, db: AsyncIOMotorDatabase, collection: str) -> None:
        self.coll = db[collection]
        self.name = f"mongo.{collection}"

    async def write_chunk(self, items: Sequence[dict[str, Any]]) -> None:
        try:
            await self.coll.insert_many(list(items), ordered=False)
        except BulkWriteError as exc:
            if not _only_duplicates(exc):
                raise


class DriverStateSink(BatchSink[dict[str, Any]]):
    """Latest state per driver, newest sequence wins (replays cannot move a driver back).

    Two idempotent steps instead of one guarded upsert: a guarded upsert that loses the
    race answers with a duplicate-key error, which FerretDB v1 reports in a form pymongo
    cannot parse (``KeyError: 'nModified'``). Inserting unknown drivers first (duplicates
    ignored) and then updating only documents with an older ``seq`` works on both servers.
    """

    name = "mongo.drivers"
    retry_on = (AutoReconnect, NetworkTimeout, ConnectionError, OSError)

    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.coll = db.drivers

    async def write_chunk(self, items: Sequence[dict[str, Any]]) -> None:
        latest: dict[str, dict[str, Any]] = {}
        for doc in items:
            cur = latest.get(doc["_id"])
            if cur is None or doc["seq"] >= cur["seq"]:
                latest[doc["_id"]] = doc
        try:
            await self.coll.insert_many(list(latest.values()), ordered=False)
        except BulkWriteError as exc:
            if not _only_duplicates(exc):
                raise
        await self.coll.bulk_write(
            [UpdateOne({"_id": d["_id"], "seq": {"$lt": d["seq"]}}, {"$set": d}) for d in latest.values()],
            ordered=False,
        )
