"""Geofence zones CRUD; every change bumps ``zones:version`` so workers reload within a second."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.responses import Response

from api.deps import ResourcesDep, require
from api.resources import Resources
from api.responses import errors
from api.security import Principal
from schemas import ZoneIn
from schemas.base import Ident
from schemas.contracts import ZONES_VERSION_KEY
from schemas.zones import ZoneEventView, ZoneOut

ZoneId = Annotated[Ident, Path()]

router = APIRouter(prefix="/v1/zones", tags=["zones"], responses=errors(401, 403, 404))
Editor = Annotated[Principal, Depends(require("dispatcher", "admin"))]
#: Zones are the operator's map (depots, no-go areas, customers' sites): staff and drivers
#: read them, customers and tracking-link viewers do not.
Reader = Annotated[Principal, Depends(require("dispatcher", "admin", "driver"))]


def _out(doc: dict[str, Any]) -> dict[str, Any]:
    return {"zone_id": doc.pop("_id"), **doc}


async def _bump(res: Resources) -> None:
    await res.redis.incr(ZONES_VERSION_KEY)


@router.post("", status_code=201, response_model=ZoneOut)
async def create_zone(zone: ZoneIn, res: ResourcesDep, _: Editor) -> dict[str, Any]:
    doc = {"_id": uuid.uuid4().hex[:16], **zone.model_dump(mode="json"), "updated_at": datetime.now(UTC)}
    await res.db.zones.insert_one(doc)
    await _bump(res)
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


@router.put("/{zone_id}", response_model=ZoneOut)
async def replace_zone(zone_id: ZoneId, zone: ZoneIn, res: ResourcesDep, _: Editor) -> dict[str, Any]:
    doc = {**zone.model_dump(mode="json"), "updated_at": datetime.now(UTC)}
    result = await res.db.zones.replace_one({"_id": zone_id}, doc)
    if result.matched_count == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no zone {zone_id!r}")
    await _bump(res)
    return _out({"_id": zone_id, **doc})


@router.delete("/{zone_id}", status_code=204, response_class=Response)
async def delete_zone(zone_id: ZoneId, res: ResourcesDep, _: Editor) -> None:
    result = await res.db.zones.delete_one({"_id": zone_id})
    if result.deleted_count == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no zone {zone_id!r}")
    await _bump(res)
