"""What the API answers, where it is the API's own (bookings and zones answer models of ``schemas``).

Every route declares one of these as its ``response_model``, so the OpenAPI document
describes every answer and the web UI's types are generated from it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class View(BaseModel):
    model_config = ConfigDict(extra="ignore")


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
