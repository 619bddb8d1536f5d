"""What notification sockets receive: one model per message, built by the workers, read by the web UI.

The workers write these to RabbitMQ (``streams.fanout``, ``streams.publish``); the API hands the
bytes on unchanged. The OpenAPI document carries their schemas (``SOCKET_MESSAGES``), so the web
UI's socket handler is typed from the same definitions as its HTTP calls.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import GeoPoint, deterministic_event_id
from schemas.bookings import BookingEvent, BookingEventType, BookingStatus
from schemas.events import DriverStatusEvent, EtaUpdate
from schemas.telemetry import GpsPing


class Notice(BaseModel):
    """A replayable message of an audience: ``id`` is its replay-stream id, added when it is sent.

    A socket that reconnects with ``after=<id>`` gets what came after it, and nothing twice.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_serialization_defaults_required=True)

    event_id: uuid.UUID
    id: str | None = None


class BookingNotice(Notice):
    """A booking's new state, to its customer, its driver, staff and its tracking links."""

    type: BookingEventType
    at: datetime
    booking_id: uuid.UUID
    status: BookingStatus
    customer_id: str
    driver_id: str | None = None
    offer_deadline: datetime | None = None
    eta_s: float | None = None
    reason: str | None = None
    version: int
    pickup: GeoPoint | None = None
    dropoff: GeoPoint | None = None

    @classmethod
    def of(cls, e: BookingEvent) -> BookingNotice:
        return cls(
            type=e.type,
            event_id=e.event_id,
            at=e.occurred_at,
            booking_id=e.booking_id,
            status=e.status,
            customer_id=e.customer_id,
            driver_id=e.driver_id,
            offer_deadline=e.offer_deadline,
            eta_s=e.eta_s,
            reason=e.reason,
            version=e.version,
            pickup=e.pickup,
            dropoff=e.dropoff,
        )


class EtaNotice(Notice):
    """The live ETA of a booking's current leg, with where its driver is."""

    type: Literal["eta.update"] = "eta.update"
    at: datetime
    booking_id: uuid.UUID
    driver_id: str
    phase: Literal["to_pickup", "to_dropoff"]
    eta_s: float
    distance_m: float
    lat: float
    lon: float

    @classmethod
    def of(cls, e: EtaUpdate) -> EtaNotice:
        return cls(
            event_id=e.event_id,
            at=e.occurred_at,
            booking_id=e.booking_id,
            driver_id=e.driver_id,
            phase=e.phase,
            eta_s=e.eta_s,
            distance_m=e.distance_m,
            lat=e.lat,
            lon=e.lon,
        )


class DriverLocation(BaseModel):
    """A driver's latest fix, live only (never replayed: the next one supersedes it), to staff."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_serialization_defaults_required=True)

    type: Literal["driver.location"] = "driver.location"
    event_id: uuid.UUID
    driver_id: str
    seq: int
    ts: datetime
    lat: float
    lon: float
    speed_mps: float | None = None
    heading_deg: float | None = None

    @classmethod
    def of(cls, p: GpsPing) -> DriverLocation:
        """Built from a validated ping on the hot path, so without validating it again."""
        return cls.model_construct(
            type="driver.location",
            event_id=deterministic_event_id("location", p.driver_id, p.seq),
            driver_id=p.driver_id,
            seq=p.seq,
            ts=p.ts,
            lat=p.lat,
            lon=p.lon,
            speed_mps=p.speed_mps,
            heading_deg=p.heading_deg,
        )


class DriverLocations(BaseModel):
    """Many drivers' locations in one RabbitMQ message; each API hands each on as a DriverLocation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["driver.locations"] = "driver.locations"
    locations: list[DriverLocation]


class Heartbeat(BaseModel):
    """Sent by the API to an idle socket, so that proxies keep it open."""

    type: Literal["heartbeat"] = "heartbeat"


class Subscribed(BaseModel):
    """The socket's first message (after the replay of ``after=``): live delivery starts here.

    ``id`` is a cursor: reconnecting with ``after=`` it (or the greatest id received since)
    misses nothing, even if no other message came. None while Redis does not answer.
    """

    type: Literal["subscribed"] = "subscribed"
    id: str | None = None


#: Everything a notification socket may receive (stream agents' own events come as their schema).
#: Staff sockets also get each driver's ``driver.status`` (online, busy, offline), live only.
SocketMessage = Annotated[
    BookingNotice | EtaNotice | DriverLocation | DriverStatusEvent | Heartbeat | Subscribed, Field(discriminator="type")
]
SOCKET_MESSAGES: tuple[type[BaseModel], ...] = (
    BookingNotice, EtaNotice, DriverLocation, DriverStatusEvent, Heartbeat, Subscribed,
)  # fmt: skip
