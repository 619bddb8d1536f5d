"""Geofence zones as the API accepts them: a polygon or a circle, with a name and tags."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import GeoPoint, Ident, Model, ShortText

FenceKind = Literal["enter", "exit", "dwell", "cross"]
#: What a zone reports unless it says otherwise (``cross`` is asked for: it costs a segment test).
DETECT_DEFAULT: tuple[FenceKind, ...] = ("enter", "exit", "dwell")


class Circle(Model):
    center: GeoPoint
    radius_m: float = Field(gt=0, le=100_000)


class ZoneIn(Model):
    name: ShortText = Field(min_length=1)
    tags: list[Ident] = Field(default_factory=list, max_length=32)
    polygon: list[GeoPoint] | None = Field(default=None, min_length=3, max_length=5000)
    circle: Circle | None = None
    dwell_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    #: The events this zone reports (Tile38's ``DETECT``): ``cross`` for sparse fixes whose segment
    #: passes through the zone with neither fix in it.
    detect: list[FenceKind] = Field(default_factory=lambda: list(DETECT_DEFAULT), min_length=1, max_length=4)

    @model_validator(mode="after")
    def _one_shape(self) -> ZoneIn:
        if (self.polygon is None) == (self.circle is None):
            raise ValueError("give exactly one of polygon or circle")
        if self.polygon is not None:
            from shapely.geometry import Polygon

            if not Polygon([(p.lon, p.lat) for p in self.polygon]).is_valid:
                raise ValueError("polygon is not valid (self-intersecting or degenerate)")
        return self


class ZoneOut(ZoneIn):
    """A stored zone as the API answers it."""

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_serialization_defaults_required=True)

    zone_id: str
    updated_at: datetime | None = None


class ZoneEventView(BaseModel):
    """An enter, exit or dwell of one driver in one zone, as stored (``geofence_events``)."""

    model_config = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True)

    event_id: str = Field(validation_alias="_id")
    type: Literal["geofence.enter", "geofence.exit", "geofence.dwell", "geofence.cross"]
    driver_id: str
    zone_id: str
    zone_name: str
    lat: float
    lon: float
    at: datetime
    dwell_s: float | None = None


class ZoneDrivers(BaseModel):
    """Drivers inside a zone now, or outside it."""

    zone_id: str
    where: Literal["inside", "outside"]
    drivers: list[str]
    #: More drivers than ``limit`` matched.
    more: bool
