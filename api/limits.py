"""Per-principal rate limits for expensive reads, in Redis so every API replica shares them."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from fastapi import HTTPException, status

from schemas.contracts import read_limit_key


class ReadLimiter:
    """A fixed window per principal: INCR and EXPIRE in one round trip, 429 with ``Retry-After`` past it."""

    def __init__(self, redis: aioredis.Redis, limit: int, window_s: float) -> None:
        self.redis, self.limit, self.window = redis, limit, max(1, int(window_s))

    async def hit(self, subject: str) -> None:
        window = int(time.time()) // self.window
        key = read_limit_key(subject, window)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, self.window + 1, nx=True)
        count, _ = await pipe.execute()
        if int(count) > self.limit:
            retry = self.window - int(time.time()) % self.window
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"more than {self.limit} reads in {self.window}s",
                headers={"Retry-After": str(max(retry, 1))},
            )
