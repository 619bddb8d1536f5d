"""The FastAPI application factory (``uvicorn api.main:create_app --factory``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import ORJSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import ErrorBarrier
from api.fastpath import NotificationsFastPath, TelemetryFastPath
from api.models import RAW_BODIES
from api.resources import Resources
from api.routes import health, metrics, web
from api.services import SERVICES, chosen, pools
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

        def add(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
            """``model`` and the models it uses as components; a reference to it."""
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
            return {"$ref": f"#/components/schemas/{model.__name__}"}

        for (path, method), model in RAW_BODIES.items():
            if method in doc["paths"].get(path, {}):  # not in a process that does not serve that route
                ref = add(model, "validation")
                doc["paths"][path][method]["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": ref}}}  # fmt: skip
        for model in SOCKET_MESSAGES:  # not HTTP bodies: what /v1/notifications sends, for typed clients
            add(model, "serialization")
            sent = components[model.__name__]
            sent["required"] = sorted(sent.get("properties", {}))  # a sent message carries every field
        return doc


def create_app() -> FastAPI:
    """The API of the services ``FLEETSTREAM_API_SERVICES`` names (``all`` by default; see api/services.py)."""
    settings = get_settings()
    services = chosen(settings.api_services)
    needs = pools(services)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Resources.open(settings, needs) as res:
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
    # Routes are matched in order: telemetry's first (its POST is most of all requests), then
    # health and metrics, which every service serves.
    routers = [r for s in services for r in s.routers]
    head = len(SERVICES["telemetry"].routers) if SERVICES["telemetry"] in services else 0
    for router in [*routers[:head], health.router, metrics.router, *routers[head:]]:
        app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, http_error)
    if any(s.serves_web for s in services):
        web.mount_pages(app, settings.web_dist)  # last: the routes above take precedence over file names
    if SERVICES["telemetry"] in services:
        app.add_middleware(TelemetryFastPath)  # the telemetry POST before the router (api/fastpath.py)
    if SERVICES["notifications"] in services:
        app.add_middleware(NotificationsFastPath)  # long-lived sockets without the router's frames
    app.add_middleware(ErrorBarrier)  # outermost: an exception never closes the connection (api/errors.py)
    return app


def openapi_json() -> str:
    """The OpenAPI document, stably ordered: ``web/openapi.json`` holds it, and the web UI's types are built from it."""
    return json.dumps(create_app().openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
