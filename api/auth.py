"""Turning a bearer token into a :class:`Principal` (HTTP and WebSocket alike).

Three kinds: the admin token (bootstrap), user access tokens (JWT, verified without a
database), and driver device tokens (looked up, hashed).

Device-token checks are cached in-process for a few seconds: ingest runs at tens of
thousands of requests per second and must not hit MongoDB for each. A revocation
therefore takes effect within ``device_token_cache_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
from fleetstream.config import Settings


@dataclass
class Authenticator:
    settings: Settings
    db: AsyncIOMotorDatabase
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
        doc = await self.db.devices.find_one({"_id": token_id})
        principal = None
        if doc and not doc.get("revoked") and same(doc["token_hash"], hash_secret(secret, self._pepper)):
            principal = Principal(subject=f"device:{token_id}", role="driver", driver_id=doc["driver_id"])
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[token] = (now + self.settings.device_token_cache_s, principal)
        return principal

    @property
    def pepper(self) -> bytes:
        """The token-hashing key, read once at start-up (not from disk per request)."""
        return self._pepper

    def forget(self) -> None:
        self._cache.clear()
