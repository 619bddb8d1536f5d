"""The project's Redis client waits out a blocking command instead of timing out under it.

redis-py 8 reads with a 5 s timeout by default: a BLPOP of 6 s (a booking verdict not in yet)
raised TimeoutError, which the API answers as 503, where the caller is owed a 202 "pending".
"""

from __future__ import annotations

import time
import uuid

import pytest

from core.clients import REDIS_SOCKET_TIMEOUT_S, redis_client
from core.config import Settings

pytestmark = pytest.mark.usefixtures("stack")


async def test_a_blocking_pop_longer_than_redis_pys_default_read_timeout_returns_none(stack: Settings) -> None:
    r = redis_client(stack.redis_dsn, max_connections=2)
    try:
        t0 = time.monotonic()
        assert await r.blpop([f"test:nothing:{uuid.uuid4().hex}"], timeout=6) is None
        assert 5.9 < time.monotonic() - t0 < 10
        assert Settings.model_fields["booking_reply_timeout_s"].metadata  # bounded below the read timeout
        assert Settings(booking_reply_timeout_s=20).booking_reply_timeout_s < REDIS_SOCKET_TIMEOUT_S
    finally:
        await r.aclose()
