"""Redis key names shared by agents and the API; importing this registers no agent.

Agent modules define their agents and pipeline steps on import, so a module that only
needs another's key names must not import that module (``--agents bookings`` would
otherwise start the driver-state step too).
"""

from __future__ import annotations

GEO_KEY = "drivers:geo:available"  # geo set of online drivers that are not busy
SEEN_KEY = "drivers:last_seen"  # sorted set, score = wall-clock time of the last processed ping
JOBS_KEY = "drivers:job"  # hash driver id → booking id it works on


def driver_key(driver_id: str) -> str:
    return f"driver:{driver_id}"


def reserve_key(driver_id: str) -> str:
    """The booking holding a driver (``streams.reservations``)."""
    return f"reserve:driver:{driver_id}"


def mirror_key(booking_id: str) -> str:
    """A booking's public view, written by the bookings agent for the API and matching."""
    return f"booking:{booking_id}"


#: Where every API replica hears of a revoked device token (pub/sub; the payload is the token id).
REVOKED_CHANNEL = "devtokens:revoked"


def device_key(token_id: str) -> str:
    """A device token's record (driver id, secret's hash, revoked), read on a token-cache miss."""
    return f"devtoken:{token_id}"
