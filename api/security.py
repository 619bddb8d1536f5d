"""Credentials: passwords, access tokens (JWT), refresh and device tokens, the admin token.

Device and refresh tokens are 256-bit random secrets, so a fast keyed hash
(HMAC-SHA256) is the right tool for storing them; slow password hashing (argon2) is
for human passwords. Such a token reads ``<prefix><id>.<secret>``: the id finds the
record, the secret proves it. Access tokens are short-lived signed JWTs checked
without a database round trip; revocation works through the refresh tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError

from core.config import Settings

DEVICE_PREFIX = "fsd_"
REFRESH_PREFIX = "fsr_"
ROLES = ("customer", "driver", "dispatcher", "admin")
_JWT_ALG = "HS256"
_PASSWORDS = PasswordHasher()


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``driver_id`` is set for drivers (device tokens, later user accounts)."""

    subject: str
    role: str  # customer | driver | dispatcher | admin | viewer (a share link: one booking, read-only)
    driver_id: str | None = None
    booking_id: str | None = None  # set for viewers

    @property
    def sees_all_drivers(self) -> bool:
        return self.role in ("dispatcher", "admin")

    @property
    def sees_all_bookings(self) -> bool:
        return self.role in ("dispatcher", "admin")


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer …`` header value, else None."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else None


def _secret_file(settings: Settings, name: str) -> str:
    """A random secret kept under FLEETSTREAM_HOME (git-ignored), shared by local processes."""
    path = Path(settings.home) / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def admin_token(settings: Settings) -> str:
    return settings.admin_token.get_secret_value() if settings.admin_token else _secret_file(settings, "admin-token")


def token_pepper(settings: Settings) -> bytes:
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else _secret_file(settings, "jwt-secret")
    return secret.encode()


def new_device_token() -> tuple[str, str, str]:
    """Returns (token_id, secret, full token shown once to the caller)."""
    return new_opaque_token(DEVICE_PREFIX)


def new_opaque_token(prefix: str) -> tuple[str, str, str]:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, secret, f"{prefix}{token_id}.{secret}"


def split_token(token: str, prefix: str) -> tuple[str, str] | None:
    if not token.startswith(prefix) or "." not in token:
        return None
    token_id, _, secret = token[len(prefix) :].partition(".")
    return (token_id, secret) if token_id and secret else None


def split_device_token(token: str) -> tuple[str, str] | None:
    return split_token(token, DEVICE_PREFIX)


def hash_password(password: str) -> str:
    """argon2id; slow on purpose (tens of ms): call it off the event loop."""
    return _PASSWORDS.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _PASSWORDS.verify(stored, password)
    except (VerifyMismatchError, InvalidHashError):
        return False


def issue_access_token(settings: Settings, user_id: str, role: str, ttl_s: float, pepper: bytes | None = None) -> str:
    """``pepper``: the signing key when the caller holds it already (it is read from a file otherwise)."""
    now = int(time.time())
    claims = {"sub": user_id, "role": role, "iat": now, "exp": now + int(ttl_s), "typ": "access"}
    return jwt.encode(claims, pepper or token_pepper(settings), algorithm=_JWT_ALG)


def read_access_token(settings: Settings, token: str, pepper: bytes | None = None) -> dict[str, object] | None:
    """The claims of a valid, unexpired access token; None for anything else."""
    try:
        claims = jwt.decode(
            token, pepper or token_pepper(settings), algorithms=[_JWT_ALG], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access" or claims.get("role") not in ROLES:
        return None
    return claims


def issue_share_token(settings: Settings, booking_id: str, ttl_s: float, pepper: bytes | None = None) -> str:
    """A read-only link to one booking: whoever holds it sees that booking live, nothing else."""
    now = int(time.time())
    claims = {"sub": f"share:{booking_id}", "bid": booking_id, "iat": now, "exp": now + int(ttl_s), "typ": "share"}
    return jwt.encode(claims, pepper or token_pepper(settings), algorithm=_JWT_ALG)


def read_share_token(settings: Settings, token: str, pepper: bytes | None = None) -> str | None:
    """The booking id of a valid, unexpired share token; None for anything else."""
    try:
        claims = jwt.decode(token, pepper or token_pepper(settings), algorithms=[_JWT_ALG],
                            options={"require": ["exp", "sub", "bid"]})  # fmt: skip
    except jwt.PyJWTError:
        return None
    return str(claims["bid"]) if claims.get("typ") == "share" else None


def hash_secret(secret: str, pepper: bytes) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
