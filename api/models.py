"""What the API answers, where it is the API's own (bookings and zones answer models of ``schemas``).

Every route declares one of these as its ``response_model``, so the OpenAPI document
describes every answer and the web UI's types are generated from it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.base import Ident
from schemas.telemetry import GpsPing


class View(BaseModel):
    """An answer: a field with a default is always in it, so the document marks it required."""

    model_config = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True)


class Problem(View):
    """An error: what was wrong, for a person to read."""

    detail: Any


class User(View):
    id: str
    email: str | None = None
    name: str = ""
    role: str
    driver_id: str | None = None
    created_at: datetime | None = None


class Tokens(View):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class DeviceTokenIssued(View):
    """A device token: shown once; the phone sends it as ``Authorization: Bearer …``."""

    token_id: str
    driver_id: str
    token: str


class Device(View):
    token_id: str
    driver_id: str
    created_at: datetime | None = None
    revoked: bool = False
    revoked_at: datetime | None = None


class Accepted(View):
    """How many pings of the request were accepted, and why the others were not."""

    accepted: int
    rejected: list[dict[str, Any]] = []


class Health(View):
    status: str


class Readiness(View):
    status: Literal["ready", "degraded"]
    checks: dict[str, bool]


class City(View):
    """The simulated city's road graph."""

    name: str = ""
    block_m: float | None = None
    nodes: list[list[float]]
    edges: list[list[float]]


# The telemetry POST reads its body raw (api.fastpath validates it ping by ping, so that one
# bad ping does not refuse the rest); these models only document it. A posted ping is a
# GpsPing whose driver_id may be left out: it is the token's driver.
PostedPing = create_model("PostedPing", __base__=GpsPing, driver_id=(Ident | None, None))


class TelemetryPost(BaseModel):
    """1…N pings of the calling device's driver."""

    pings: list[PostedPing] = Field(min_length=1)


#: Request bodies that routes read raw, added to the OpenAPI document by ``api.main.App``.
RAW_BODIES: dict[tuple[str, str], type[BaseModel]] = {("/v1/telemetry", "post"): TelemetryPost}
