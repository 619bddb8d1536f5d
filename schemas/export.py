"""JSON Schema files for device and app developers (``fleetstream schemas export``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.bookings import BookingCommand, BookingEvent
from schemas.codec import MESSAGE_ADAPTER
from schemas.events import DeadLetter, DriverStatusEvent, EtaUpdate, GeofenceEvent
from schemas.notifications import SOCKET_MESSAGES
from schemas.telemetry import GpsPing, TelemetryBatch
from schemas.zones import ZoneIn

EXPORTED: tuple[type[BaseModel], ...] = (
    GpsPing,
    TelemetryBatch,
    BookingCommand,
    BookingEvent,
    DriverStatusEvent,
    GeofenceEvent,
    EtaUpdate,
    DeadLetter,
    ZoneIn,
    *SOCKET_MESSAGES,
)


def export_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in EXPORTED:
        path = directory / f"{model.__name__}.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    union = directory / "Message.json"
    union.write_text(json.dumps(MESSAGE_ADAPTER.json_schema(), indent=2, sort_keys=True) + "\n")
    written.append(union)
    return written
