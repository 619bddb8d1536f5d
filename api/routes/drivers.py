"""Read API for drivers: live state (Redis), nearby (geo index), track history (MongoDB)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import PrincipalDep, ResourcesDep, can_read_driver
from schemas.base import Ident, Latitude, Longitude
from sinks.mongo import read_track
from streams.keys import GEO_KEY, SEEN_KEY, driver_key

router = APIRouter(prefix="/v1/drivers", tags=["drivers"])

_FLOATS = ("lat", "lon", "speed_mps", "heading_deg", "seen")


def _state(driver_id: str, h: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"driver_id": driver_id, "status": h.get("status"), "ts": h.get("ts")}
    for k in _FLOATS:
        out[k] = float(h[k]) if h.get(k) else None
    out["seq"] = int(h["seq"]) if h.get("seq") else None
    return out


@router.get("")
async def fleet(
    res: ResourcesDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 5000,
) -> list[dict[str, Any]]:
    """Every driver seen recently (online or busy), most recent first: the dispatcher's map on open."""
    if not principal.sees_all_drivers:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only dispatchers and admins see the whole fleet")
    ids = await res.redis.zrevrange(SEEN_KEY, 0, limit - 1)
    pipe = res.redis.pipeline(transaction=False)
    for d in ids:
        pipe.hgetall(driver_key(d))
    states = await pipe.execute()
    return [_state(d, h) for d, h in zip(ids, states, strict=True) if h]


@router.get("/nearby")
async def nearby(
    res: ResourcesDep,
    principal: PrincipalDep,
    lat: Annotated[Latitude, Query()],
    lon: Annotated[Longitude, Query()],
    radius_m: Annotated[float, Query(gt=0, le=100_000)] = 5000,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> list[dict[str, Any]]:
    """Online, available drivers nearest first (dispatchers and admins)."""
    if not principal.sees_all_drivers:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only dispatchers and admins search for drivers")
    found = await res.redis.geosearch(
        GEO_KEY, longitude=lon, latitude=lat, radius=radius_m, unit="m",
        sort="ASC", count=limit, withdist=True,
    )  # fmt: skip
    pipe = res.redis.pipeline(transaction=False)
    for name, _ in found:
        pipe.hgetall(driver_key(name))
    states = await pipe.execute()
    return [{**_state(name, h), "distance_m": dist} for (name, dist), h in zip(found, states, strict=True)]


@router.get("/{driver_id}")
async def get_driver(driver_id: Ident, res: ResourcesDep, principal: PrincipalDep) -> dict[str, Any]:
    can_read_driver(principal, driver_id)
    h = await res.redis.hgetall(driver_key(driver_id))
    if not h:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live state for driver {driver_id!r}")
    return _state(driver_id, h)


@router.get("/{driver_id}/track")
async def track(
    driver_id: Ident,
    res: ResourcesDep,
    principal: PrincipalDep,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: Annotated[datetime | None, Query()] = None,
    after_seq: Annotated[int | None, Query(ge=-1, description="cursor: next_after_seq of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """Pings in sequence (= time) order; follow ``next_after_seq`` for the next page."""
    can_read_driver(principal, driver_id)
    cursor = -1 if after_seq is None else after_seq
    pings = await read_track(res.db, driver_id, from_, to, cursor, limit, redis=res.redis)
    for p in pings:
        p["ts"] = p["ts"].isoformat()
    return {"driver_id": driver_id, "pings": pings, "next_after_seq": pings[-1]["seq"] if len(pings) == limit else None}
