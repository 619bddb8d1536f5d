"""Read API for drivers: live state (Redis), nearby (geo index), track history (MongoDB)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field

from api import exports
from api.deps import PrincipalDep, ResourcesDep, can_read_driver
from api.resources import Resources
from api.responses import errors
from schemas.base import GEO_MAX_LAT, Ident, Longitude
from schemas.contracts import GEO_KEY, KNOWN_KEY, driver_key
from schemas.drivers import DriverState, NearbyDriver
from schemas.reports import DriverSummary, Stop, Trip, trip_day_id
from sinks.mongo import read_track

router = APIRouter(prefix="/v1/drivers", tags=["drivers"], responses=errors(401, 403, 404, 429))

#: What the geo index can search around: Redis's GEO range (Web Mercator), not all of WGS84.
GeoLatitude = Annotated[float, Field(ge=-GEO_MAX_LAT, le=GEO_MAX_LAT, allow_inf_nan=False)]
#: A cursor is a ping seq (at most 2**53, as in ``GpsPing``) or -1 for "from the start".
Cursor = Annotated[int, Query(ge=-1, le=2**53, description="cursor: next_cursor of the previous page")]


class TrackPing(BaseModel):
    seq: int
    ts: datetime
    lat: float
    lon: float
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None


class Track(BaseModel):
    driver_id: str
    order: Literal["asc", "desc"]
    pings: list[TrackPing]
    #: Pass as ``cursor`` (with the same ``order``) for the next page; None when this page was the last.
    next_cursor: int | None
    #: The same as ``next_cursor`` for ``order=asc`` (the name earlier clients follow).
    next_after_seq: int | None


@router.get("", response_model=list[DriverState])
async def fleet(
    res: ResourcesDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 5000,
) -> list[DriverState]:
    """Every driver heard of in the last ``driver_known_s`` (online, busy or offline), most recent first."""
    if not principal.sees_all_drivers:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only dispatchers and admins see the whole fleet")
    await res.reads.hit(principal.subject)
    ids = cast(list[str], await res.redis.zrevrange(KNOWN_KEY, 0, limit - 1))  # decode_responses: str
    pipe = res.redis.pipeline(transaction=False)
    for d in ids:
        pipe.hgetall(driver_key(d))
    states = await pipe.execute()
    return [DriverState.from_hash(d, h) for d, h in zip(ids, states, strict=True) if h]


@router.get("/nearby", response_model=list[NearbyDriver])
async def nearby(
    res: ResourcesDep,
    principal: PrincipalDep,
    lat: Annotated[GeoLatitude, Query()],
    lon: Annotated[Longitude, Query()],
    radius_m: Annotated[float, Query(gt=0, le=100_000)] = 5000,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> list[NearbyDriver]:
    """Online, available drivers nearest first (dispatchers and admins)."""
    if not principal.sees_all_drivers:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only dispatchers and admins search for drivers")
    found = cast(list[tuple[str, float]], await res.redis.geosearch(
        GEO_KEY, longitude=lon, latitude=lat, radius=radius_m, unit="m",
        sort="ASC", count=limit, withdist=True,
    ))  # fmt: skip
    pipe = res.redis.pipeline(transaction=False)
    for name, _ in found:
        pipe.hgetall(driver_key(name))
    states = await pipe.execute()
    return [
        NearbyDriver(**DriverState.from_hash(name, h).model_dump(), distance_m=dist)
        for (name, dist), h in zip(found, states, strict=True)
    ]


@router.get("/{driver_id}", response_model=DriverState)
async def get_driver(driver_id: Ident, res: ResourcesDep, principal: PrincipalDep) -> DriverState:
    can_read_driver(principal, driver_id)
    h = cast(dict[str, str], await res.redis.hgetall(driver_key(driver_id)))
    if not h:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live state for driver {driver_id!r}")
    return DriverState.from_hash(driver_id, h)


@router.get("/{driver_id}/track", response_model=Track)
async def track(
    driver_id: Ident,
    res: ResourcesDep,
    principal: PrincipalDep,
    from_: Annotated[AwareDatetime | None, Query(alias="from", description="with a timezone")] = None,
    to: Annotated[AwareDatetime | None, Query(description="exclusive, with a timezone")] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="asc: oldest first; desc: newest first")] = "asc",
    cursor: Cursor = -1,
    after_seq: Annotated[int | None, Query(ge=-1, le=2**53, description="older name of cursor (asc)")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> Track:
    """Pings of a time range, oldest or newest first, a page at a time: follow ``next_cursor``.

    A read costs its page (bucket directory pages in Redis, buckets by ``_id``), never the
    driver's whole history, and reads are rate-limited per caller.
    """
    can_read_driver(principal, driver_id)
    await res.reads.hit(principal.subject)
    if after_seq is not None and cursor == -1:
        cursor = after_seq
    desc = order == "desc"
    pings = await read_track(res.db, driver_id, from_, to, cursor, limit, redis=res.redis, newest_first=desc)
    nxt = pings[-1]["seq"] if len(pings) == limit else None
    return Track(
        driver_id=driver_id,
        order=order,
        pings=[TrackPing(**p) for p in pings],
        next_cursor=nxt,
        next_after_seq=None if desc else nxt,
    )


#: Pings per read of an export (the track reader's largest page).
EXPORT_PAGE = 5000


@router.get("/{driver_id}/track/export", response_class=StreamingResponse, responses={
    200: {"description": "the track, streamed", "content": {
        media: {"schema": {"type": "string"}} for media in exports.MEDIA_TYPES.values()}},
    422: {},
})  # fmt: skip
async def export_track(
    driver_id: Ident,
    res: ResourcesDep,
    principal: PrincipalDep,
    format: Annotated[exports.ExportFormat, Query(description="gpx, kml or csv")] = "gpx",
    from_: Annotated[AwareDatetime | None, Query(alias="from", description="default: 24 h before to")] = None,
    to: Annotated[AwareDatetime | None, Query(description="exclusive; default: now")] = None,
) -> StreamingResponse:
    """A time range of the driver's track as GPX, KML or CSV, oldest first, streamed page by page.

    Whoever may read the track may export it. A range is at most ``export_max_range_s`` long.
    """
    can_read_driver(principal, driver_id)
    end = to or datetime.now(UTC)
    start = from_ or end - timedelta(days=1)
    longest = res.settings.export_max_range_s
    if end <= start or (end - start).total_seconds() > longest:
        raise HTTPException(422, f"from must be before to, and the range at most {longest:g} s")
    await res.reads.hit(principal.subject)

    async def page(cursor: int) -> list[dict[str, Any]]:
        return await read_track(res.db, driver_id, start, end, cursor, EXPORT_PAGE, redis=res.redis)

    first = await page(-1)  # before the answer starts: a server that fails here answers 503
    name = f"{driver_id}-{start.strftime('%Y%m%dT%H%M%SZ')}.{format}"
    return StreamingResponse(
        exports.stream(format, driver_id, first, EXPORT_PAGE, page),
        media_type=exports.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


Since = Annotated[AwareDatetime | None, Query(alias="from", description="default: 24 h before to")]
Until = Annotated[AwareDatetime | None, Query(description="exclusive; default: now")]


Kind = Literal["trips", "stops"]


async def _reported(res: Resources, driver_id: str, kinds: tuple[Kind, ...], from_: datetime | None,
                    to: datetime | None) -> tuple[datetime, datetime, dict[Kind, list[dict[str, Any]]]]:  # fmt: skip
    """Of each kind, the driver's items that started in the range, oldest first: one read per UTC day, by ``_id``."""
    end = to or datetime.now(UTC)
    start = from_ or end - timedelta(days=1)
    longest = res.settings.report_max_range_s
    if end <= start or (end - start).total_seconds() > longest:
        raise HTTPException(422, f"from must be before to, and the range at most {longest:g} s")
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    fields = dict.fromkeys(kinds, 1)
    docs = await asyncio.gather(*(res.db.trip_days.find_one({"_id": trip_day_id(driver_id, d)}, fields)
                                  for d in days))  # fmt: skip
    found: dict[Kind, list[dict[str, Any]]] = {}
    for kind in kinds:
        items = [
            {k: v for k, v in item.items() if k not in ("rev", "closed")}
            for doc in docs if doc is not None
            for item in (doc.get(kind) or {}).values()
            if start <= item["start"] < end
        ]  # fmt: skip
        found[kind] = sorted(items, key=lambda i: i["start"])
    return start, end, found


@router.get("/{driver_id}/trips", response_model=list[Trip], responses={422: {}})
async def trips(driver_id: Ident, res: ResourcesDep, principal: PrincipalDep, from_: Since = None, to: Until = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 500) -> list[Trip]:  # fmt: skip
    """Trips that started in the range, oldest first; one under way has no ``end`` (its distance so far).

    A trip is the movement between two stops (``FLEETSTREAM_STOP_MIN_S`` within ``FLEETSTREAM_STOP_RADIUS_M``).
    """
    can_read_driver(principal, driver_id)
    await res.reads.hit(principal.subject)
    _, _, found = await _reported(res, driver_id, ("trips",), from_, to)
    return [Trip.model_validate(i) for i in found["trips"][:limit]]


@router.get("/{driver_id}/stops", response_model=list[Stop], responses={422: {}})
async def stops(driver_id: Ident, res: ResourcesDep, principal: PrincipalDep, from_: Since = None, to: Until = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 500) -> list[Stop]:  # fmt: skip
    """Stops that started in the range, oldest first; the driver's current one has no ``end``."""
    can_read_driver(principal, driver_id)
    await res.reads.hit(principal.subject)
    _, _, found = await _reported(res, driver_id, ("stops",), from_, to)
    return [Stop.model_validate(i) for i in found["stops"][:limit]]


@router.get("/{driver_id}/summary", response_model=DriverSummary, responses={422: {}})
async def summary(driver_id: Ident, res: ResourcesDep, principal: PrincipalDep, from_: Since = None,
                  to: Until = None) -> DriverSummary:  # fmt: skip
    """Distance, driving and idle time, top speed and counts of the trips and stops that started in the range."""
    can_read_driver(principal, driver_id)
    await res.reads.hit(principal.subject)
    start, end, found = await _reported(res, driver_id, ("trips", "stops"), from_, to)
    moves, rests = found["trips"], found["stops"]
    now = datetime.now(UTC)
    idle = sum(s["duration_s"] if s.get("end") is not None else max((min(now, end) - s["start"]).total_seconds(), 0)
               for s in rests)  # fmt: skip
    return DriverSummary(
        driver_id=driver_id, start=start, end=end,
        distance_m=round(sum(t["distance_m"] for t in moves), 1),
        driving_s=round(sum(t["driving_s"] for t in moves), 1),
        idle_s=round(idle, 1),
        max_speed_mps=max((t["max_speed_mps"] for t in moves), default=0.0),
        trips=len(moves), stops=len(rests),
    )  # fmt: skip
