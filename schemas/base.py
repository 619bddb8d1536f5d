"""Envelope and shared field types.

Every event carries ``event_id``, ``type``, ``schema_version`` and ``occurred_at``
so that any consumer can drop a replayed record by its id. Ids of derived events
are deterministic (:func:`deterministic_event_id`): reprocessing the same input
after a crash yields the same id, which is what makes downstream effects idempotent.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1
_NAMESPACE = uuid.UUID("6f1c2b7e-5d0a-4f38-9a53-2f0f5c1e8b11")

#: Identifiers chosen by clients or by us (driver, user, zone, device, tag). No ``.``, ``:``, ``*`` or
#: ``#``: an id is spliced into Redis keys (``driver:{id}``) and RabbitMQ routing keys
#: (``driver.{id}.#``), and a driver named ``a.*`` must not subscribe to every driver ``a.…``.
Ident = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
#: The alphabet of :data:`Ident`, for code that checks ids outside pydantic (paths, headers).
IDENT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Free text from people (notes, addresses, reasons): bounded so one record stays small.
ShortText = Annotated[str, StringConstraints(max_length=500)]
Latitude = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
#: Redis's geo index (Web Mercator) takes latitudes up to this; a fix beyond it is kept in
#: a driver's state and history but stays out of the index (nobody is matched at the poles).
GEO_MAX_LAT = 85.05112878
Longitude = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; a ValueError (so a 422, not a 500) when the offset pushes it past year 1 or 9999."""
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("timestamp out of range once converted to UTC") from exc


#: Timezone-aware instant, normalised to UTC so equal instants compare and encode equal.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(to_utc)]


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


class ServicePoint(GeoPoint):
    """A place the platform serves (a booking's pickup or dropoff): inside the geo index's range.

    Matching searches Redis's geo index around a pickup, which refuses latitudes beyond
    :data:`GEO_MAX_LAT`; the API says so with a 422 instead of accepting a booking no
    driver can ever be found for.
    """

    lat: Annotated[float, Field(ge=-GEO_MAX_LAT, le=GEO_MAX_LAT, allow_inf_nan=False)]


class Envelope(Model):
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    occurred_at: UtcDatetime = Field(default_factory=utcnow)
