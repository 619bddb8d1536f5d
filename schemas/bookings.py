"""Booking commands (what callers ask for) and events (what the state machine decided).

Commands travel on ``bookings.commands`` keyed by booking id; the booking agent
owns the state machine and emits one :class:`BookingEvent` per accepted transition.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Envelope, GeoPoint, Ident, Model, ShortText, UtcDatetime


class BookingStatus(StrEnum):
    requested = "requested"
    offered = "offered"
    assigned = "assigned"
    driver_arrived = "driver_arrived"
    picked_up = "picked_up"
    delivered = "delivered"
    cancelled = "cancelled"
    expired = "expired"


class ParcelSize(StrEnum):
    small = "small"
    medium = "medium"
    large = "large"


BookingCommandType = Literal[
    "booking.request",
    "booking.cancel",
    "booking.accept",
    "booking.decline",
    "booking.mark_arrived",
    "booking.mark_picked_up",
    "booking.mark_delivered",
    # issued by the platform itself (actor_role "system"): matching, offer timer, expiry
    "booking.offer",
    "booking.offer_timeout",
    "booking.expire",
]

#: Who asked for a command: a user role, or the platform itself.
ActorRole = Literal["customer", "driver", "dispatcher", "admin", "system"]

BookingEventType = Literal[
    "booking.requested",
    "booking.offered",
    "booking.accepted",
    "booking.declined",
    "booking.assigned",
    "booking.driver_arrived",
    "booking.picked_up",
    "booking.delivered",
    "booking.cancelled",
    "booking.expired",
]


class TimeWindow(Model):
    start: UtcDatetime
    end: UtcDatetime

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.end <= self.start:
            raise ValueError("time window end must be after its start")
        return self


class BookingCommand(Envelope):
    """A request to change a booking; ``actor_*`` is who asked (checked by the API)."""

    type: BookingCommandType
    booking_id: uuid.UUID
    actor_id: Ident
    actor_role: ActorRole
    pickup: GeoPoint | None = None
    dropoff: GeoPoint | None = None
    parcel_size: ParcelSize | None = None
    notes: ShortText | None = None
    window: TimeWindow | None = None
    reason: ShortText | None = None
    proof: ShortText | None = None
    #: booking.offer / booking.offer_timeout: the driver concerned; offer: until when it stands.
    driver_id: Ident | None = None
    offer_deadline: UtcDatetime | None = None
    #: booking.offer: the estimated pickup time the offer was ranked by.
    eta_s: float | None = Field(default=None, ge=0.0)

    @model_validator(mode="after")
    def _request_has_route(self) -> BookingCommand:
        if self.type == "booking.request" and (self.pickup is None or self.dropoff is None):
            raise ValueError("booking.request needs pickup and dropoff")
        if self.type == "booking.offer" and (self.driver_id is None or self.offer_deadline is None):
            raise ValueError("booking.offer needs driver_id and offer_deadline")
        if self.type == "booking.offer_timeout" and self.driver_id is None:
            raise ValueError("booking.offer_timeout needs driver_id")
        return self


class BookingEvent(Envelope):
    """One accepted transition, carrying the whole booking as it is after it.

    Consumers (MongoDB sink, notifications, ETAs) need no other lookup; ``version``
    counts transitions, so a sink keeps the newest and ignores replays of older ones.
    """

    type: BookingEventType
    booking_id: uuid.UUID
    status: BookingStatus
    customer_id: Ident
    driver_id: Ident | None = None
    pickup: GeoPoint | None = None
    dropoff: GeoPoint | None = None
    parcel_size: ParcelSize | None = None
    notes: ShortText | None = None
    window: TimeWindow | None = None
    offer_deadline: UtcDatetime | None = None
    eta_s: float | None = Field(default=None, ge=0.0)
    reason: ShortText | None = None
    proof: ShortText | None = None
    created_at: UtcDatetime | None = None
    command_id: uuid.UUID | None = None
    version: int = Field(default=0, ge=0)


class View(BaseModel):
    """Base of what the API answers: lenient on read (stored documents carry internal fields).

    A field with a default is always in the answer, so the OpenAPI document marks it required
    (generated clients then need no check for it).
    """

    model_config = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True)


class BookingView(View):
    """A booking as callers see it: the API's answers, and the Redis mirror the bookings agent writes."""

    booking_id: uuid.UUID
    status: BookingStatus
    customer_id: str
    driver_id: str | None = None
    pickup: GeoPoint | None = None
    dropoff: GeoPoint | None = None
    parcel_size: ParcelSize | None = None
    notes: str | None = None
    window: TimeWindow | None = None
    offer_deadline: datetime | None = None
    eta_s: float | None = None
    reason: str | None = None
    proof: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0


class BookingPage(View):
    items: list[BookingView]
    next_offset: int | None = None


class BookingEventView(View):
    """One transition of a booking, as stored (``booking_events``): its timeline, oldest first."""

    event_id: str = Field(validation_alias="_id")
    type: BookingEventType
    status: BookingStatus
    version: int
    occurred_at: datetime
    driver_id: str | None = None
    reason: str | None = None
    eta_s: float | None = None


class BookingPending(View):
    """The bookings agent did not answer in time: the command is in Kafka and will be applied."""

    status: Literal["pending"] = "pending"
    booking_id: uuid.UUID
    command_id: uuid.UUID


class BookingConflict(View):
    """The command does not apply to the booking's current state."""

    detail: str
    status: BookingStatus | None = None


class ShareLink(View):
    booking_id: uuid.UUID
    token: str
    path: str
    expires_in_s: float
