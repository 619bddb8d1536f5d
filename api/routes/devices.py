"""Driver device tokens: issued to a driver account, shown once, stored hashed, revocable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.responses import Response

from api.accounts import AccountError, ensure_driver_account
from api.deps import AdminDep, PrincipalDep, ResourcesDep
from api.models import Device, DeviceTokenIssued
from api.responses import errors
from api.security import hash_secret, new_device_token
from schemas.base import Ident

router = APIRouter(tags=["devices"], responses=errors(401, 403, 404))
DriverId = Annotated[Ident, Path()]


@router.post("/v1/drivers/{driver_id}/devices", status_code=201, response_model=DeviceTokenIssued,
             responses={403: {}, 409: {}})  # fmt: skip
async def issue_device_token(driver_id: DriverId, res: ResourcesDep, principal: PrincipalDep) -> Any:
    """A new device token of a driver account (created without password if missing).

    Admins and dispatchers issue tokens for any driver; a driver logged in with a user
    account issues tokens for its own phones; a device token cannot issue tokens.
    """
    own = (
        principal.role == "driver" and principal.driver_id == driver_id and not principal.subject.startswith("device:")
    )
    if not (principal.sees_all_drivers or own):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "only admins, dispatchers or the driver itself issue device tokens"
        )
    try:
        await ensure_driver_account(res.db, driver_id)
    except AccountError as exc:
        raise HTTPException(exc.status, exc.detail) from exc
    token_id, secret, token = new_device_token()
    token_hash = hash_secret(secret, res.auth.pepper)
    await res.db.devices.insert_one(
        {"_id": token_id, "driver_id": driver_id, "token_hash": token_hash, "created_at": datetime.now(UTC),
         "revoked": False}
    )  # fmt: skip
    await res.auth.remember_device(token_id, driver_id, token_hash)
    return {"token_id": token_id, "driver_id": driver_id, "token": token}


@router.get("/v1/drivers/{driver_id}/devices", response_model=list[Device])
async def list_devices(driver_id: DriverId, res: ResourcesDep, _: AdminDep) -> list[dict[str, object]]:
    cursor = res.db.devices.find({"driver_id": driver_id}, {"token_hash": 0})
    return [{**d, "token_id": d.pop("_id")} async for d in cursor]


@router.delete("/v1/devices/{token_id}", status_code=204, response_class=Response)
async def revoke_device_token(token_id: str, res: ResourcesDep, _: AdminDep) -> None:
    result = await res.db.devices.update_one(
        {"_id": token_id}, {"$set": {"revoked": True, "revoked_at": datetime.now(UTC)}}
    )
    if result.matched_count == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device token {token_id!r}")
    await res.auth.revoke_device(token_id)  # every replica forgets it at once (pub/sub)
