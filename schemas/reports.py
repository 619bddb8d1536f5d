"""Trips, stops and the summary of a time range: what the trips agent emits and the reports API serves.

A stop is a driver stationary (within a radius) for at least a minimum time; a trip is
the movement between two stops. Both are *opened* when detected and *closed* when they
end, under one id (the driver and the seq of the fix they start at), so a store can
keep the latest of each and a replay writes the same document again.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.base import Ident, Model


class Trip(Model):
    trip_id: str
    driver_id: Ident
    start: AwareDatetime
    #: None while the trip goes on.
    end: AwareDatetime | None = None
    start_lat: float
    start_lon: float
    end_lat: float | None = None
    end_lon: float | None = None
    #: Along the fixes, metres (so far, while open).
    distance_m: float = Field(0.0, ge=0)
    #: Time between its first and last fix, seconds.
    driving_s: float = Field(0.0, ge=0)
    max_speed_mps: float = Field(0.0, ge=0)
    first_seq: int


class Stop(Model):
    stop_id: str
    driver_id: Ident
    start: AwareDatetime
    end: AwareDatetime | None = None
    #: Where the driver stood (the fix the stop started at).
    lat: float
    lon: float
    #: Stationary so far (open) or in all (closed), seconds.
    duration_s: float = Field(0.0, ge=0)
    first_seq: int


class MovementEvent(Model):
    """The trips agent's output (``agents.trips``): a trip or a stop opened or closed."""

    event_id: uuid.UUID
    type: Literal["trip.opened", "trip.closed", "stop.opened", "stop.closed"]
    driver_id: Ident
    #: The seq of the fix that produced it: a trip's or stop's later events have greater ones.
    rev: int
    trip: Trip | None = None
    stop: Stop | None = None

    @property
    def closed(self) -> bool:
        return self.type.endswith(".closed")


class DriverSummary(Model):
    """A driver's time range: trips and stops that started in it (the open ones as far as they got)."""

    driver_id: str
    start: datetime
    end: datetime
    distance_m: float
    driving_s: float
    #: Time stationary in stops, seconds (an open stop counts up to now).
    idle_s: float
    max_speed_mps: float
    trips: int
    stops: int


def trip_day_id(driver_id: str, day: date) -> str:
    """The ``trip_days`` document of a driver's UTC day (trips and stops by the day they started)."""
    return f"{driver_id}:{day.isoformat()}"


def day_of(event: MovementEvent) -> date:
    item = event.trip or event.stop
    assert item is not None, "a movement event carries a trip or a stop"
    return item.start.astimezone(UTC).date()
