"""Credentials: admin token, driver device tokens (hashed at rest, revocable).

Device tokens are 256-bit random secrets, so a fast keyed hash (HMAC-SHA256) is the
right tool for storing them; slow password hashing (argon2) is for human passwords.
A token reads ``fsd_<id>.<secret>``: the id finds the record, the secret proves it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fleetstream.config import Settings

DEVICE_PREFIX = "fsd_"


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``driver_id`` is set for drivers (device tokens, later user accounts)."""

    subject: str
    role: str  # customer | driver | dispatcher | admin
    driver_id: str | None = None

    @property
    def sees_all_drivers(self) -> bool:
        return self.role in ("dispatcher", "admin")


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
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, secret, f"{DEVICE_PREFIX}{token_id}.{secret}"


def split_device_token(token: str) -> tuple[str, str] | None:
    if not token.startswith(DEVICE_PREFIX) or "." not in token:
        return None
    token_id, _, secret = token[len(DEVICE_PREFIX) :].partition(".")
    return (token_id, secret) if token_id and secret else None


def hash_secret(secret: str, pepper: bytes) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
