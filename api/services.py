"""The API's services: which routers each serves, which servers it needs, which paths nginx sends it.

The original design's four services, each runnable alone (``fleetstream api --service``) and
scaled on its own behind nginx. ``all`` is one process serving every router (the demo, tests).
The nginx configuration of the local stack and of ``deploy/`` is generated from
:data:`SERVICES`, so a route and the proxy rule that reaches it are declared in one place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter

from api.routes import auth, bookings, devices, drivers, notifications, osmand, telemetry, web, zones

Pool = Literal["kafka", "redis", "mongo", "rabbitmq"]
ServiceName = Literal["auth", "bookings", "telemetry", "notifications"]


@dataclass(frozen=True)
class Service:
    name: ServiceName
    description: str
    #: In the order the app matches them (telemetry first: its POST is most of all requests).
    routers: tuple[APIRouter, ...]
    #: The servers it connects to at start-up; ``/readyz`` checks exactly these.
    pools: frozenset[Pool]
    #: nginx locations routed to it: ``= exact``, ``~ regex`` or a prefix (nginx's own precedence).
    locations: tuple[str, ...]
    #: Locations that are WebSockets (upgrade, long read timeout).
    sockets: tuple[str, ...] = ()
    serves_web: bool = False


SERVICES: dict[ServiceName, Service] = {
    "telemetry": Service(
        "telemetry",
        "driver tracking: device telemetry (HTTP, WebSocket, OsmAnd), live state, nearby, track history",
        (telemetry.router, osmand.router, drivers.router),
        frozenset({"kafka", "redis", "mongo"}),
        ("= /v1/telemetry", "/v1/telemetry/", "/v1/osmand/", "/v1/drivers"),
        sockets=("/v1/telemetry/",),
    ),
    "bookings": Service(
        "bookings",
        "bookings and their lifecycle, tracking links, zones",
        (bookings.router, zones.router),
        frozenset({"kafka", "redis", "mongo"}),
        ("/v1/bookings", "/v1/zones"),
    ),
    "auth": Service(
        "auth",
        "accounts, sessions, device tokens; the web UI and its city map",
        (auth.router, devices.router, web.router),
        frozenset({"redis", "mongo"}),
        ("/v1/auth/", "= /v1/users", "~ ^/v1/drivers/[^/]+/devices$", "/v1/devices/", "= /v1/city", "/"),
        serves_web=True,
    ),
    "notifications": Service(
        "notifications",
        "live notifications to customers, drivers and staff over a WebSocket",
        (notifications.router,),
        frozenset({"redis", "mongo", "rabbitmq"}),
        ("= /v1/notifications",),
        sockets=("= /v1/notifications",),
    ),
}


def chosen(spec: str) -> list[Service]:
    """``all`` or comma-separated names, in the app's matching order (telemetry first)."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names or names == ["all"]:
        return list(SERVICES.values())
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ValueError(f"unknown services {unknown}; known: all, {', '.join(SERVICES)}")
    return [s for n, s in SERVICES.items() if n in names]


def pools(services: Iterable[Service]) -> frozenset[Pool]:
    return frozenset(p for s in services for p in s.pools)


def route(path: str) -> ServiceName:
    """The service nginx sends ``path`` to, by nginx's rules: exact, then regex, then the longest prefix."""
    for name, s in SERVICES.items():
        if f"= {path}" in s.locations:
            return name
    for name, s in SERVICES.items():
        if any(loc.startswith("~ ") and re.search(loc[2:], path) for loc in s.locations):
            return name
    best: tuple[int, ServiceName] | None = None
    for name, s in SERVICES.items():
        for loc in s.locations:
            if loc[:2] not in ("= ", "~ ") and path.startswith(loc) and (best is None or len(loc) > best[0]):
                best = (len(loc), name)
    if best is None:
        raise LookupError(path)
    return best[1]
