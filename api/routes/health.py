"""Liveness and readiness: readiness checks, for real, each server this process's services need."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse

from api.models import Health, Readiness
from api.responses import errors

router = APIRouter(tags=["health"], responses=errors())


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> ORJSONResponse:
    res = request.app.state.resources

    async def kafka() -> bool:
        return res.kafka.ready and bool(await res.kafka.producer.client.fetch_all_metadata())

    async def redis() -> bool:
        return bool(await res.redis.ping())

    async def mongo() -> bool:
        return (await res.db.command("ping")).get("ok") == 1.0

    async def rabbitmq() -> bool:
        return bool(res.hub.connected)

    checks_of = {"kafka": kafka, "redis": redis, "mongo": mongo, "rabbitmq": rabbitmq}
    names = [n for n in checks_of if n in res.pools]  # what this process's services need, nothing else
    results = await asyncio.gather(*(asyncio.wait_for(checks_of[n](), 3) for n in names), return_exceptions=True)
    checks = {("mongodb" if n == "mongo" else n): (r is True) for n, r in zip(names, results, strict=True)}
    ok = all(checks.values())
    return ORJSONResponse({"status": "ready" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503)
