"""Envelope and shared field types.

Every event carries ``event_id``, ``type``, ``schema_version`` and ``occurred_at``
so that any consumer can drop a replayed record by its id. Ids of derived events
are deterministic (:func:`deterministic_event_id`): reprocessing the same input
after a crash yields the same id, which is what makes downstream effects idempotent.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1
_NAMESPACE = uuid.UUID("6f1c2b7e-5d0a-4f38-9a53-2f0f5c1e8b11")

#: Identifiers chosen by clients or by us: short, printable, no spaces.
Ident = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
#: Free text from people (notes, addresses, reasons): bounded so one record stays small.
ShortText = Annotated[str, StringConstraints(max_length=500)]
Latitude = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


#: Timezone-aware instant, normalised to UTC so equal instants compare and encode equal.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def deterministic_event_id(*parts: object) -> uuid.UUID:
    """Same inputs, same id: events derived during a replay dedupe downstream."""
    return uuid.uuid5(_NAMESPACE, "|".join(str(p) for p in parts))


class Model(BaseModel):
    """Strict base: unknown fields and NaN/inf are errors, not silently kept."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class GeoPoint(Model):
    lat: Latitude
    lon: Longitude


class Envelope(Model):
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    occurred_at: UtcDatetime = Field(default_factory=utcnow)
