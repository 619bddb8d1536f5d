"""Events the stream agents derive: driver status, geofences, ETAs, notifications, dead letters."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.base import Envelope, Ident, Latitude, Longitude, ShortText, UtcDatetime


class DriverStatus(StrEnum):
    online = "online"
    offline = "offline"
    busy = "busy"


class DriverStatusEvent(Envelope):
    type: Literal["driver.status"] = "driver.status"
    driver_id: Ident
    status: DriverStatus
    previous: DriverStatus | None = None
    last_seen: UtcDatetime
    lat: Latitude | None = None
    lon: Longitude | None = None


class GeofenceEvent(Envelope):
    """Tile38-style fence detection: a driver entered, left, or stayed inside a zone."""

    #: cross: the segment between two fixes passed through the zone, neither fix in it.
    type: Literal["geofence.enter", "geofence.exit", "geofence.dwell", "geofence.cross"]
    driver_id: Ident
    zone_id: Ident
    zone_name: ShortText
    lat: Latitude
    lon: Longitude
    at: UtcDatetime
    dwell_s: float | None = Field(default=None, ge=0.0)


class EtaUpdate(Envelope):
    type: Literal["eta.update"] = "eta.update"
    booking_id: uuid.UUID
    customer_id: Ident | None = None
    driver_id: Ident
    phase: Literal["to_pickup", "to_dropoff"]
    eta_s: float = Field(ge=0.0)
    distance_m: float = Field(ge=0.0)
    lat: Latitude
    lon: Longitude


class DeadLetter(Envelope):
    """A record an agent could not use, kept with the reason instead of stopping the agent."""

    type: Literal["deadletter"] = "deadletter"
    source_topic: str = Field(max_length=255)
    reason: Ident
    #: The step or agent that could not handle it (None: it could not be decoded).
    step: Ident | None = None
    detail: str = Field(default="", max_length=4000)
    key: str | None = Field(default=None, max_length=255)
    payload: str = Field(default="", max_length=1_000_000)
