"""The single definition of every Fleetstream message.

The API validates requests with these models, the stream codec decodes Kafka
records into them (one decode per record) and the sinks write them, so a field
is added or changed in exactly one place.
"""

from schemas.base import SCHEMA_VERSION, Envelope, GeoPoint, deterministic_event_id
from schemas.bookings import (
    BookingCommand,
    BookingCommandType,
    BookingEvent,
    BookingEventType,
    BookingStatus,
    ParcelSize,
)
from schemas.codec import MESSAGE_ADAPTER, Message, decode, encode
from schemas.events import DeadLetter, DriverStatus, DriverStatusEvent, EtaUpdate, GeofenceEvent
from schemas.telemetry import GpsPing, IngestPing, TelemetryBatch
from schemas.zones import Circle, ZoneIn

__all__ = [
    "MESSAGE_ADAPTER",
    "SCHEMA_VERSION",
    "BookingCommand",
    "BookingCommandType",
    "BookingEvent",
    "BookingEventType",
    "BookingStatus",
    "Circle",
    "DeadLetter",
    "DriverStatus",
    "DriverStatusEvent",
    "Envelope",
    "EtaUpdate",
    "GeoPoint",
    "GeofenceEvent",
    "GpsPing",
    "IngestPing",
    "Message",
    "ParcelSize",
    "TelemetryBatch",
    "ZoneIn",
    "decode",
    "deterministic_event_id",
    "encode",
]
