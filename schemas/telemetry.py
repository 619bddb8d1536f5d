"""GPS pings as devices send them, and the batch that travels as one Kafka record."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, Field, ValidationInfo, field_validator, model_validator

from core.config import get_settings
from schemas.base import Envelope, Ident, Latitude, Longitude, Model, UtcDatetime, to_utc


def check_device_time(ts: datetime, now: datetime) -> None:
    """Reject clocks a device got wrong; only applied at ingest (see ``context``)."""
    s = get_settings()
    ahead = (ts - now).total_seconds()
    if ahead > s.max_future_skew_s:
        raise ValueError(f"timestamp is {ahead:.0f}s in the future (limit {s.max_future_skew_s:.0f}s)")
    age = (now - ts).total_seconds()
    if age > s.max_ping_age_s:
        raise ValueError(f"timestamp is {age:.0f}s old, beyond the {s.max_ping_age_s:.0f}s horizon")


class GpsPing(Model):
    """One fix from a driver's phone.

    ``seq`` is the device's monotonically increasing counter: with ``driver_id`` it
    is the natural idempotency key of a ping (duplicates, replays, resends).
    """

    driver_id: Ident
    seq: int = Field(ge=0, le=2**53)
    #: Normalised to UTC by :class:`IngestPing` at the edge; records we encode carry UTC, and
    #: decoding them again skips a Python call per ping (a tenth of a worker's decode time).
    ts: AwareDatetime
    lat: Latitude
    lon: Longitude
    accuracy_m: float | None = Field(default=None, ge=0.0, le=100_000.0)
    speed_mps: float | None = Field(default=None, ge=0.0, le=150.0)
    heading_deg: float | None = Field(default=None, ge=0.0, lt=360.0)


class IngestPing(GpsPing):
    """A ping as the API receives it: also checks the device clock against ``context["now"]``.

    A subclass rather than a validator on ``GpsPing``: time checks belong to ingest (a
    record replayed from Kafka next week is still valid), and every stream decode of
    ``GpsPing`` would otherwise pay for the call.
    """

    @field_validator("ts")
    @classmethod
    def _ingest_window(cls, ts: datetime, info: ValidationInfo) -> datetime:
        ts = to_utc(ts)
        now = (info.context or {}).get("now")
        if now is not None:
            check_device_time(ts, now)
        return ts


class TelemetryBatch(Envelope):
    """Pings of one driver, in device order; one Kafka record keyed by ``driver_id``."""

    type: Literal["telemetry.batch"] = "telemetry.batch"
    driver_id: Ident
    received_at: UtcDatetime | None = None
    pings: list[GpsPing] = Field(min_length=1)

    @field_validator("pings")
    @classmethod
    def _bounded(cls, pings: list[GpsPing]) -> list[GpsPing]:
        limit = get_settings().max_batch_pings
        if len(pings) > limit:
            raise ValueError(f"batch has {len(pings)} pings, limit is {limit}")
        return pings

    @model_validator(mode="after")
    def _one_driver(self) -> TelemetryBatch:
        for i, p in enumerate(self.pings):
            if p.driver_id != self.driver_id:
                raise ValueError(f"pings[{i}].driver_id {p.driver_id!r} differs from batch driver_id")
        return self
