"""The FastAPI application factory (``uvicorn api.main:create_app --factory``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import ORJSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import ErrorBarrier
from api.fastpath import TelemetryFastPath
from api.models import RAW_BODIES
from api.resources import Resources
from api.routes import (
    auth,
    bookings,
    devices,
    drivers,
    health,
    metrics,
    notifications,
    osmand,
    telemetry,
    web,
    zones,
)
from core.config import get_settings
from core.runtime import tune_gc
from schemas.notifications import SOCKET_MESSAGES


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own errors, except that a body that is not JSON is a 422 like any invalid input (ingest's too)."""
    assert isinstance(exc, StarletteHTTPException)
    code = 422 if exc.status_code == 400 else exc.status_code
    return ORJSONResponse({"detail": exc.detail}, status_code=code, headers=exc.headers)


def operation_id(route: APIRoute) -> str:
    """The handler's name (``create_booking``): generated clients name their methods after it."""
    return route.name


class App(FastAPI):
    """FastAPI, whose document also describes the bodies that routes read raw, and the socket messages."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        doc = super().openapi()  # cached as self.openapi_schema: completed here once
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        for (path, method), model in RAW_BODIES.items():
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
            doc["paths"][path][method]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
            }
        for model in SOCKET_MESSAGES:  # not HTTP bodies: what /v1/notifications sends, for typed clients
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        return doc


def create_app() -> FastAPI:
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Resources.open(settings) as res:
            app.state.resources = res
            tune_gc()
            yield

    app = App(
        title="Fleetstream",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        generate_unique_id_function=operation_id,
    )
    # Telemetry first: routes are matched in order, and its POST is most of all requests.
    for module in (telemetry, osmand, health, metrics, auth, bookings, notifications, devices, drivers, zones, web):
        app.include_router(module.router)
    app.add_exception_handler(StarletteHTTPException, http_error)
    web.mount_pages(app, settings.web_dist)  # last: the routes above take precedence over file names
    app.add_middleware(TelemetryFastPath)  # the telemetry POST before the router (api/fastpath.py)
    app.add_middleware(ErrorBarrier)  # outermost: an exception never closes the connection (api/errors.py)
    return app


def openapi_json() -> str:
    """The OpenAPI document, stably ordered: ``web/openapi.json`` holds it, and the web UI's types are built from it."""
    return json.dumps(create_app().openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
