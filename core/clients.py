"""Client constructors shared by the API and the workers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError
from redis.typing import EncodableT


def fields(mapping: Mapping[str, str | float]) -> Mapping[EncodableT, EncodableT]:
    """A hash's fields as redis-py's ``hset`` types them (its key type is a union, and Mapping is invariant)."""
    return cast(Mapping[EncodableT, EncodableT], mapping)


#: How long a reply may take. redis-py 8 reads with a 5 s timeout by default, which a BLPOP
#: of ``booking_reply_timeout_s`` (5 s) raced: a booking whose verdict was late got a 503
#: (a timeout error) instead of its 202 "pending". Blocking commands must block for less.
REDIS_SOCKET_TIMEOUT_S = 30.0


def redis_client(dsn: str, max_connections: int, wait_s: float = 10.0) -> aioredis.Redis:
    """A Redis client whose pool makes a caller wait for a free connection instead of failing.

    The default pool raises ``MaxConnectionsError`` the moment a burst (a matching round's
    concurrent searches, many requests waiting for booking verdicts) needs one more
    connection than allowed, which crashed a worker; waiting is back-pressure.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        dsn, decode_responses=True, max_connections=max_connections, timeout=wait_s,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
    )  # fmt: skip
    return aioredis.Redis(connection_pool=pool)


class Lua:
    """A Lua script queued in pipelines as a bare EVALSHA.

    redis-py's ``Script``, used in a pipeline, sends ``SCRIPT EXISTS`` before every
    ``execute()``: a second round trip per batch on the live path (4.5 % of the worker's
    time at 5,000 pings/s went there). Here the script is loaded when missing, which
    ``execute`` learns from NOSCRIPT (a new or restarted Redis), not by asking each time.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def queue(self, pipe: Pipeline, keys: Sequence[Any], args: Sequence[Any]) -> None:
        pipe.evalsha(self.sha, len(keys), *keys, *args)


async def execute(r: aioredis.Redis, build: Callable[[Pipeline], None], scripts: Sequence[Lua]) -> list[Any]:
    """Run the pipeline ``build`` fills; after NOSCRIPT load ``scripts`` and run it once more.

    Only for pipelines whose plain commands are idempotent (HSET, GEOADD…): they run
    twice then, while a script that got NOSCRIPT did not run at all.
    """
    pipe = r.pipeline(transaction=False)
    build(pipe)
    try:
        return await pipe.execute()
    except NoScriptError:
        for s in scripts:
            await r.script_load(s.source)
    pipe = r.pipeline(transaction=False)
    build(pipe)
    return await pipe.execute()
