"""A per-driver directory of history buckets in Redis, so track reads are ``_id`` lookups.

FerretDB v1 (the MongoDB server of our tests) answers only ``_id`` equality without
scanning the whole collection: a track query by driver took 1.8 s at 4,000 buckets and
grows with every driver's history. Two sorted sets per driver (bucket id by first
sequence number and by start time) turn a read into point lookups; on MongoDB the
compound index would do, and ``read_track`` falls back to it when a directory is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, cast

import redis.asyncio as aioredis
from motor.motor_asyncio import AsyncIOMotorDatabase
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.contracts import track_seq_key, track_time_key
from sinks.base import BatchSink

_seq_key, _time_key = track_seq_key, track_time_key


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


#: Bucket ids read from the directory per round trip: a read touches O(page), never a driver's whole history.
PAGE = 64


async def bucket_pages(
    redis: aioredis.Redis,
    driver_id: str,
    start: datetime | None,
    end: datetime | None,
    cursor: int,
    newest_first: bool = False,
) -> AsyncIterator[list[str]] | None:
    """Pages of candidate bucket ids in read order, or None when this driver has no directory.

    Oldest first, ``cursor`` is the last seq already read (buckets with later pings); newest
    first, the first seq not to read again. With a time range the time directory is
    walked, else the seq directory. The bucket that starts before the range (or cursor)
    may hold pings inside it, so the walk starts one bucket early.
    """
    seq_key, time_key = _seq_key(driver_id), _time_key(driver_id)
    if not await redis.exists(seq_key):
        return None
    if start is not None or end is not None:
        key = time_key
        lo: float | str = start.timestamp() if start is not None else "-inf"
        hi: float | str = end.timestamp() if end is not None else "+inf"
        hi_open = f"({hi}" if end is not None else "+inf"
    else:
        key, lo, hi_open = seq_key, "-inf", "+inf"
        if newest_first:
            hi_open = f"({cursor}" if cursor >= 0 else "+inf"
        else:
            lo = cursor if cursor >= 0 else "-inf"
    return _walk(redis, key, lo, hi_open, newest_first)


async def _walk(
    redis: aioredis.Redis, key: str, lo: float | str, hi: str, newest_first: bool
) -> AsyncIterator[list[str]]:
    # The bucket starting just before ``lo`` may reach into the range: first when reading
    # oldest first, last when reading newest first.
    before = await redis.zrevrangebyscore(key, f"({lo}", "-inf", start=0, num=1) if lo != "-inf" else []
    if before and not newest_first:
        yield cast(list[str], before)
    offset = 0
    while True:
        if newest_first:
            page = await redis.zrevrangebyscore(key, hi, lo, start=offset, num=PAGE)
        else:
            page = await redis.zrangebyscore(key, lo, hi, start=offset, num=PAGE)
        if page:
            yield cast(list[str], page)
        if len(page) < PAGE:
            break
        offset += PAGE
    if before and newest_first:
        yield cast(list[str], before)


async def fetch_buckets(db: AsyncIOMotorDatabase, ids: Sequence[str]) -> list[dict[str, Any]]:
    docs = await asyncio.gather(*(db.tracks.find_one({"_id": i}, {"pings": 1, "fmt": 1}) for i in ids))
    return [d for d in docs if d is not None]
