"""Wire encoding of every message: JSON produced and parsed by pydantic-core (Rust).

``decode`` validates straight from bytes into the right model by its ``type``
(a discriminated union), so a consumer decodes each record exactly once.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from schemas.bookings import BookingCommand, BookingEvent
from schemas.events import DeadLetter, DriverStatusEvent, EtaUpdate, GeofenceEvent, Notification
from schemas.telemetry import TelemetryBatch

Message = Annotated[
    TelemetryBatch
    | BookingCommand
    | BookingEvent
    | DriverStatusEvent
    | GeofenceEvent
    | EtaUpdate
    | Notification
    | DeadLetter,
    Field(discriminator="type"),
]

MESSAGE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Message)


def encode(message: Any) -> bytes:
    return message.__pydantic_serializer__.to_json(message)


def decode(data: bytes | str, context: dict[str, Any] | None = None) -> Any:
    return MESSAGE_ADAPTER.validate_json(data, context=context)
