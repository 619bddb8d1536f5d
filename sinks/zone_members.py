"""Who is inside each zone now, in Redis: the answer of ``GET /v1/zones/{id}/drivers``.

Kept from the geofence events in their order per driver (enter adds, exit removes), so
a replay applies the same changes again and ends in the same set.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas import GeofenceEvent
from schemas.contracts import zone_members_key
from sinks.base import BatchSink


class ZoneMembersSink(BatchSink[GeofenceEvent]):
    name = "redis.zone_members"
    retry_on = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def write_chunk(self, items: Sequence[GeofenceEvent]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for e in items:
            if e.type == "geofence.enter":
                pipe.sadd(zone_members_key(e.zone_id), e.driver_id)
            elif e.type == "geofence.exit":
                pipe.srem(zone_members_key(e.zone_id), e.driver_id)
        if len(pipe):
            await pipe.execute()
