"""Client constructors shared by the API and the workers."""

from __future__ import annotations

import redis.asyncio as aioredis


def redis_client(dsn: str, max_connections: int, wait_s: float = 10.0) -> aioredis.Redis:
    """A Redis client whose pool makes a caller wait for a free connection instead of failing.

    The default pool raises ``MaxConnectionsError`` the moment a burst (a matching round's
    concurrent searches, many requests waiting for booking verdicts) needs one more
    connection than allowed, which crashed a worker; waiting is back-pressure.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        dsn, decode_responses=True, max_connections=max_connections, timeout=wait_s
    )
    return aioredis.Redis(connection_pool=pool)
