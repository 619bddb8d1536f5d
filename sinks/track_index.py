"""A per-driver directory of history buckets in Redis, so track reads are ``_id`` lookups.

FerretDB v1 (the MongoDB server of our tests) answers only ``_id`` equality without
scanning the whole collection: a track query by driver took 1.8 s at 4,000 buckets and
grows with every driver's history. Two sorted sets per driver (bucket id by first
sequence number and by start time) turn a read into point lookups; on MongoDB the
compound index would do, and ``read_track`` falls back to it when a directory is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sinks.base import BatchSink


def _seq_key(driver_id: str) -> str:
    return f"track:{driver_id}:seq"


def _time_key(driver_id: str) -> str:
    return f"track:{driver_id}:t0"


class TrackIndexSink(BatchSink[dict[str, Any]]):
    """Adds stored buckets to the directory; ZADD of the same member twice changes nothing."""

    name = "redis.track_index"
    retry_on = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def write_chunk(self, items: Sequence[dict[str, Any]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for b in items:
            pipe.zadd(_seq_key(b["driver_id"]), {b["_id"]: b["first_seq"]})
            pipe.zadd(_time_key(b["driver_id"]), {b["_id"]: b["t0"].timestamp()})
        await pipe.execute()


async def bucket_ids(
    redis: aioredis.Redis, driver_id: str, start: datetime | None, end: datetime | None, after_seq: int
) -> list[str] | None:
    """Candidate bucket ids in sequence order, or None when this driver has no directory."""
    seq_key, time_key = _seq_key(driver_id), _time_key(driver_id)
    if not await redis.exists(seq_key):
        return None
    # The bucket that starts at or before the cursor may hold later pings, so it is included.
    first = await redis.zrevrangebyscore(seq_key, after_seq, "-inf", start=0, num=1) if after_seq >= 0 else []
    ids = list(first) + list(await redis.zrangebyscore(seq_key, f"({after_seq}", "+inf"))
    if start is not None or end is not None:
        lo = start.timestamp() if start is not None else "-inf"
        hi = f"({end.timestamp()}" if end is not None else "+inf"
        before = await redis.zrevrangebyscore(time_key, lo, "-inf", start=0, num=1) if start is not None else []
        in_time = set(before) | set(await redis.zrangebyscore(time_key, lo, hi))
        ids = [i for i in ids if i in in_time]
    return ids


async def fetch_buckets(db: AsyncIOMotorDatabase, ids: Sequence[str]) -> list[dict[str, Any]]:
    docs = await asyncio.gather(*(db.tracks.find_one({"_id": i}, {"pings": 1, "fmt": 1}) for i in ids))
    return [d for d in docs if d is not None]
