"""Geofence zones CRUD; every change is an entry on ``zones:changes``, which workers apply within a second."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.responses import Response

from api.deps import ResourcesDep, require
from api.resources import Resources
from api.responses import errors
from api.security import Principal
from schemas import ZoneIn
from schemas.base import Ident
from schemas.contracts import KNOWN_KEY, ZONE_CHANGES_KEY, ZONE_CHANGES_MAXLEN, zone_members_key
from schemas.zones import ZoneDrivers, ZoneEventView, ZoneOut

ZoneId = Annotated[Ident, Path()]

router = APIRouter(prefix="/v1/zones", tags=["zones"], responses=errors(401, 403, 404))
Editor = Annotated[Principal, Depends(require("dispatcher", "admin"))]
#: Zones are the operator's map (depots, no-go areas, customers' sites): staff and drivers
#: read them, customers and tracking-link viewers do not.
Reader = Annotated[Principal, Depends(require("dispatcher", "admin", "driver"))]


def _out(doc: dict[str, Any]) -> dict[str, Any]:
    return {"zone_id": doc.pop("_id"), **doc}


async def _changed(res: Resources, zone_id: str) -> None:
    """After the write: a worker that reads the entry then reads the zone sees this version or a later one."""
    await res.redis.xadd(ZONE_CHANGES_KEY, {"zone": zone_id}, maxlen=ZONE_CHANGES_MAXLEN, approximate=True)


@router.post("", status_code=201, response_model=ZoneOut)
async def create_zone(zone: ZoneIn, res: ResourcesDep, _: Editor) -> dict[str, Any]:
    doc = {"_id": uuid.uuid4().hex[:16], **zone.model_dump(mode="json"), "updated_at": datetime.now(UTC)}
    await res.db.zones.insert_one(doc)
    await _changed(res, doc["_id"])
    return _out(doc)


@router.get("", response_model=list[ZoneOut])
async def list_zones(res: ResourcesDep, _: Reader) -> list[dict[str, Any]]:
    return [_out(d) async for d in res.db.zones.find({}).sort("name", 1)]


@router.get("/{zone_id}", response_model=ZoneOut)
async def get_zone(zone_id: ZoneId, res: ResourcesDep, _: Reader) -> dict[str, Any]:
    doc = await res.db.zones.find_one({"_id": zone_id})
    if doc is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no zone {zone_id!r}")
    return _out(doc)


@router.get("/{zone_id}/events", response_model=list[ZoneEventView])
async def zone_events(
    zone_id: ZoneId, res: ResourcesDep, _: Editor, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[ZoneEventView]:
    """The zone's enters, exits and dwells, newest first (dispatchers and admins: they say where drivers were)."""
    cursor = res.db.geofence_events.find({"zone_id": zone_id}).sort("at", -1).limit(limit)
    return [ZoneEventView.model_validate(d) async for d in cursor]  # on the (zone_id, at) index


@router.get("/{zone_id}/drivers", response_model=ZoneDrivers)
async def zone_drivers(
    zone_id: ZoneId,
    res: ResourcesDep,
    _: Editor,
    where: Annotated[Literal["inside", "outside"], Query(description="inside the zone now, or not")] = "inside",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> ZoneDrivers:
    """Drivers inside the zone now (its enters minus its exits), or the fleet's drivers outside it.

    ``outside`` is every driver heard of lately (``GET /v1/drivers``) not inside, most recent first.
    """
    if await res.db.zones.find_one({"_id": zone_id}, {"_id": 1}) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no zone {zone_id!r}")
    key = zone_members_key(zone_id)
    if where == "inside":
        found: list[str] = []
        cursor = 0
        while True:  # SSCAN: a page at a time, never the set in one reply
            cursor, page = await res.redis.sscan(key, cursor, count=min(limit, 1000))
            found += cast(list[str], page)
            if cursor == 0 or len(found) >= limit:
                break
        return ZoneDrivers(zone_id=zone_id, where=where, drivers=sorted(found[:limit]), more=len(found) > limit)
    out: list[str] = []
    start = 0
    while len(out) <= limit:  # the fleet a page at a time, most recent first, until limit + 1 are found
        known = cast(list[str], await res.redis.zrevrange(KNOWN_KEY, start, start + 999))
        if not known:
            break
        pipe = res.redis.pipeline(transaction=False)
        for d in known:
            pipe.sismember(key, d)
        out += [d for d, i in zip(known, await pipe.execute(), strict=True) if not i]
        start += len(known)
    return ZoneDrivers(zone_id=zone_id, where=where, drivers=out[:limit], more=len(out) > limit)


@router.put("/{zone_id}", response_model=ZoneOut)
async def replace_zone(zone_id: ZoneId, zone: ZoneIn, res: ResourcesDep, _: Editor) -> dict[str, Any]:
    doc = {**zone.model_dump(mode="json"), "updated_at": datetime.now(UTC)}
    result = await res.db.zones.replace_one({"_id": zone_id}, doc)
    if result.matched_count == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no zone {zone_id!r}")
    await _changed(res, zone_id)
    return _out({"_id": zone_id, **doc})


@router.delete("/{zone_id}", status_code=204, response_class=Response)
async def delete_zone(zone_id: ZoneId, res: ResourcesDep, _: Editor) -> None:
    result = await res.db.zones.delete_one({"_id": zone_id})
    if result.deleted_count == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no zone {zone_id!r}")
    await _changed(res, zone_id)
