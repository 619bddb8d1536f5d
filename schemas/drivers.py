"""A driver's live state: what the worker keeps in Redis for the API and matching to read.

``streams.driver_state`` writes the ``driver:{id}`` hash (its Lua script's ``HSET`` names the
fields of :data:`DriverState.HASH_FIELDS`, a test checks that they agree) and the API reads it
back through :meth:`DriverState.from_hash`; nothing else spells the hash's layout.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from schemas.events import DriverStatus

_STATUSES = frozenset(s.value for s in DriverStatus)


class DriverState(BaseModel):
    """A driver's last fix, its status and when the worker last heard of it (``seen``, epoch s)."""

    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    driver_id: str
    status: DriverStatus | None = None
    ts: str | None = None
    lat: float | None = None
    lon: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    seen: float | None = None
    seq: int | None = None

    #: The hash's fields: every field but ``driver_id`` (the key holds it).
    HASH_FIELDS: ClassVar[tuple[str, ...]] = ("lat", "lon", "speed_mps", "heading_deg", "ts", "seq", "seen", "status")
    _FLOATS: ClassVar[tuple[str, ...]] = ("lat", "lon", "speed_mps", "heading_deg", "seen")

    @classmethod
    def from_hash(cls, driver_id: str, h: dict[str, str]) -> DriverState:
        """The hash as Redis returns it (strings; an empty string for "not sent")."""
        floats = {k: float(h[k]) if h.get(k) else None for k in cls._FLOATS}
        status = h.get("status", "")
        return cls(
            driver_id=driver_id,
            status=DriverStatus(status) if status in _STATUSES else None,
            ts=h.get("ts") or None,
            seq=int(h["seq"]) if h.get("seq") else None,
            **floats,
        )


class NearbyDriver(DriverState):
    distance_m: float
