"""Turning a bearer token into a :class:`Principal` (HTTP and WebSocket alike).

Three kinds: the admin token (bootstrap), user access tokens (JWT, verified without a
database), and driver device tokens (looked up, hashed).

Device-token checks are cached in-process for a few seconds: ingest runs at tens of
thousands of requests per second and must not hit MongoDB for each. A revocation
therefore takes effect within ``device_token_cache_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from motor.motor_asyncio import AsyncIOMotorDatabase

from api.security import (
    Principal,
    admin_token,
    hash_secret,
    read_access_token,
    read_share_token,
    same,
    split_device_token,
    token_pepper,
)
from core.clients import fields
from core.config import Settings
from schemas.contracts import REVOKED_CHANNEL, device_key

log = logging.getLogger(__name__)


@dataclass
class Authenticator:
    settings: Settings
    db: AsyncIOMotorDatabase
    redis: aioredis.Redis | None = None
    _admin: str = ""
    _pepper: bytes = b""
    _cache: dict[str, tuple[float, Principal | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._admin = admin_token(self.settings)
        self._pepper = token_pepper(self.settings)

    async def authenticate(self, token: str | None) -> Principal | None:
        if not token:
            return None
        if same(token, self._admin):
            return Principal(subject="admin", role="admin")
        parts = split_device_token(token)
        if parts is None:
            claims = read_access_token(self.settings, token, self._pepper)
            if claims is None:
                shared = read_share_token(self.settings, token, self._pepper)
                return None if shared is None else Principal(f"share:{shared}", "viewer", booking_id=shared)
            sub, role = str(claims["sub"]), str(claims["role"])
            return Principal(subject=sub, role=role, driver_id=sub if role == "driver" else None)
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        token_id, secret = parts
        record = await self._record(token_id)
        principal = None
        if record and record.get("revoked") != "1" and same(record["token_hash"], hash_secret(secret, self._pepper)):
            principal = Principal(subject=f"device:{token_id}", role="driver", driver_id=record["driver_id"])
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[token] = (now + self.settings.device_token_cache_s, principal)
        return principal

    async def _record(self, token_id: str) -> dict[str, str] | None:
        """The token's record from Redis, else (issued before Redis knew it) from MongoDB, copied to Redis.

        Redis first because a cache miss must not queue behind history writes: on FerretDB, token
        reads waited behind the store's inserts, and the first request of each of 2,000 phones
        took seconds (p99 6.4 s in ``benchmarks.phones``).
        """
        if self.redis is not None:
            cached = cast(dict[str, str], await self.redis.hgetall(device_key(token_id)))  # decode_responses
            if cached:
                return cached
        doc = await self.db.devices.find_one({"_id": token_id})
        if doc is None:
            return None
        record = {
            "driver_id": doc["driver_id"],
            "token_hash": doc["token_hash"],
            "revoked": "1" if doc.get("revoked") else "0",
        }
        if self.redis is not None:
            await self.redis.hset(device_key(token_id), mapping=fields(record))
        return record

    async def remember_device(self, token_id: str, driver_id: str, token_hash: str) -> None:
        if self.redis is not None:
            await self.redis.hset(device_key(token_id), mapping={"driver_id": driver_id, "token_hash": token_hash,
                                                                 "revoked": "0"})  # fmt: skip

    async def revoke_device(self, token_id: str) -> None:
        """Marks it revoked in Redis and tells every replica, which drop it from their caches at once."""
        self.evict(token_id)
        if self.redis is not None:
            await self.redis.hset(device_key(token_id), "revoked", "1")
            await self.redis.publish(REVOKED_CHANNEL, token_id)

    def evict(self, token_id: str) -> None:
        for token in [t for t in self._cache if (p := split_device_token(t)) is not None and p[0] == token_id]:
            del self._cache[token]

    async def listen_for_revocations(self) -> None:
        """Evicts revoked tokens as replicas announce them; after a lost subscription, the whole cache."""
        assert self.redis is not None
        while True:
            try:
                async with self.redis.pubsub() as ps:
                    await ps.subscribe(REVOKED_CHANNEL)
                    self._cache.clear()  # anything revoked while not subscribed
                    async for msg in ps.listen():
                        if msg.get("type") == "message":
                            self.evict(str(msg["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: subscribe again
                log.warning("revocation subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(1)

    @property
    def pepper(self) -> bytes:
        """The token-hashing key, read once at start-up (not from disk per request)."""
        return self._pepper

    def forget(self) -> None:
        self._cache.clear()
