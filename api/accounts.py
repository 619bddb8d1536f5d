"""User accounts: registration, password login with rate limits, rotating refresh tokens.

Stored in MongoDB: ``users`` (unique email), ``refresh_tokens`` (hashed, one *family*
per login). Refreshing uses a token up and issues the next one of its family; a token
presented twice means it was copied, so the whole family is revoked (the thief and
the owner both have to log in again). Driver accounts are also what device tokens
belong to: their user id is the driver id the telemetry pipeline uses.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

from api.security import (
    REFRESH_PREFIX,
    hash_password,
    hash_secret,
    issue_access_token,
    new_opaque_token,
    same,
    split_token,
    token_pepper,
    verify_password,
)
from core.config import Settings
from schemas.contracts import login_limit_key

#: Spent on an unknown email too, so response time does not tell which emails exist.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class AccountError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def body(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "refresh_token": self.refresh_token,
                "token_type": "bearer", "expires_in": self.expires_in}  # fmt: skip


def new_user_id() -> str:
    return f"u_{secrets.token_hex(8)}"


def public(user: dict[str, Any]) -> dict[str, Any]:
    return {"id": user["_id"], "email": user["email"], "name": user.get("name", ""), "role": user["role"],
            "driver_id": user.get("driver_id"), "created_at": user.get("created_at")}  # fmt: skip


async def create_user(db: AsyncIOMotorDatabase, email: str, password: str | None, name: str, role: str,
                      user_id: str | None = None) -> dict[str, Any]:  # fmt: skip
    uid = user_id or new_user_id()
    doc = {
        "_id": uid,
        "email": email.lower(),
        "name": name,
        "role": role,
        "password_hash": await asyncio.to_thread(hash_password, password) if password else None,
        "created_at": datetime.now(UTC),
        "driver_id": uid if role == "driver" else None,
    }
    try:
        await db.users.insert_one(doc)
    except DuplicateKeyError as exc:
        raise AccountError(409, "an account with this email already exists") from exc
    return doc


async def ensure_driver_account(db: AsyncIOMotorDatabase, driver_id: str) -> dict[str, Any]:
    """The driver account a device token is issued to; created (without password) if missing."""
    user = await db.users.find_one({"_id": driver_id})
    if user is not None:
        if user["role"] != "driver":
            raise AccountError(409, f"account {driver_id!r} is a {user['role']}, not a driver")
        return user
    try:
        return await create_user(db, f"{driver_id}@drivers.invalid", None, driver_id, "driver", user_id=driver_id)
    except AccountError:  # created concurrently
        user = await db.users.find_one({"_id": driver_id})
        if user is None:
            raise
        return user


class LoginLimiter:
    """Fixed-window counters in Redis, shared by every API replica."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis, self.s = redis, settings

    async def check(self, email: str, address: str) -> None:
        """Refuse while the account or the address has too many recent failures.

        Only failures count against an address: many people behind one NAT (or the demo's
        simulated customers) log in successfully from one address; credential stuffing fails.
        """
        acct, addr = login_limit_key("acct", email), login_limit_key("addr", address)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(addr)
        pipe.get(acct)
        pipe.ttl(addr)
        pipe.ttl(acct)
        attempts, failures, addr_ttl, acct_ttl = await pipe.execute()
        if attempts is not None and int(attempts) >= self.s.login_max_attempts_per_address:
            raise AccountError(429, "too many failed logins from this address", {"Retry-After": str(max(addr_ttl, 1))})
        if failures is not None and int(failures) >= self.s.login_max_failures_per_account:
            raise AccountError(429, "too many failed logins for this account", {"Retry-After": str(max(acct_ttl, 1))})

    async def failed(self, email: str, address: str) -> None:
        window = int(self.s.login_window_s)
        pipe = self.redis.pipeline(transaction=False)
        for key in (login_limit_key("acct", email), login_limit_key("addr", address)):
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
        await pipe.execute()

    async def succeeded(self, email: str) -> None:
        await self.redis.delete(login_limit_key("acct", email))


class Accounts:
    def __init__(self, db: AsyncIOMotorDatabase, redis: aioredis.Redis, settings: Settings) -> None:
        self.db, self.s = db, settings
        self.limiter = LoginLimiter(redis, settings)
        self._pepper = token_pepper(settings)

    async def login(self, email: str, password: str, address: str) -> TokenPair:
        email = email.lower()
        await self.limiter.check(email, address)
        user = await self.db.users.find_one({"email": email})
        stored = (user or {}).get("password_hash") or _DUMMY_HASH
        ok = await asyncio.to_thread(verify_password, stored, password)
        if user is None or not user.get("password_hash") or not ok:
            await self.limiter.failed(email, address)
            raise AccountError(401, "wrong email or password")
        await self.limiter.succeeded(email)
        return await self._issue(user, family=secrets.token_hex(8))

    async def refresh(self, token: str) -> TokenPair:
        doc = await self._refresh_doc(token)
        now = datetime.now(UTC)
        if doc.get("used_at") is not None:
            await self._revoke_family(doc["family"])
            raise AccountError(401, "refresh token was already used; every session of this login is revoked")
        result = await self.db.refresh_tokens.update_one(
            {"_id": doc["_id"], "used_at": None}, {"$set": {"used_at": now}}
        )
        if result.modified_count != 1:  # used concurrently: same verdict as above
            await self._revoke_family(doc["family"])
            raise AccountError(401, "refresh token was already used; every session of this login is revoked")
        user = await self.db.users.find_one({"_id": doc["user_id"]})
        if user is None or user.get("disabled"):
            raise AccountError(401, "account no longer active")
        return await self._issue(user, family=doc["family"])

    async def logout(self, token: str) -> None:
        doc = await self._refresh_doc(token, allow_used=True)
        await self._revoke_family(doc["family"])

    async def _refresh_doc(self, token: str, allow_used: bool = False) -> dict[str, Any]:
        parts = split_token(token, REFRESH_PREFIX)
        doc = await self.db.refresh_tokens.find_one({"_id": parts[0]}) if parts else None
        if doc is None or not same(doc["token_hash"], hash_secret(parts[1], self._pepper)):  # type: ignore[index]
            raise AccountError(401, "invalid refresh token")
        expires = doc["expires_at"]
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        if doc.get("revoked") or expires <= datetime.now(UTC):
            raise AccountError(401, "refresh token revoked or expired")
        return doc

    async def _revoke_family(self, family: str) -> None:
        await self.db.refresh_tokens.update_many({"family": family}, {"$set": {"revoked": True}})

    async def _issue(self, user: dict[str, Any], family: str) -> TokenPair:
        token_id, secret, token = new_opaque_token(REFRESH_PREFIX)
        now = datetime.now(UTC)
        await self.db.refresh_tokens.insert_one({
            "_id": token_id, "user_id": user["_id"], "family": family,
            "token_hash": hash_secret(secret, self._pepper), "created_at": now,
            "expires_at": now + timedelta(seconds=self.s.refresh_token_ttl_s), "used_at": None, "revoked": False,
        })  # fmt: skip
        access = issue_access_token(self.s, user["_id"], user["role"], self.s.access_token_ttl_s, self._pepper)
        return TokenPair(access, token, int(self.s.access_token_ttl_s))
