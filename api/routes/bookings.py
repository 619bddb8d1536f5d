"""Bookings: customers create and cancel, drivers act on offers and jobs, staff see all.

Every change is a command on ``bookings.commands`` decided by the booking agent; the
route waits (``booking_reply_timeout_s``) for its verdict on ``reply:{command id}`` in
Redis, so an invalid transition reaches the caller as 409 naming the current state.
Without a verdict in time the answer is 202 "pending" (the command is written and will
be decided). Reads come from the agent's Redis mirror, lists from MongoDB. A booking
the caller may not see answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, Header, HTTPException, Query, status
from fastapi.responses import ORJSONResponse
from pydantic import Field

from api.deps import PrincipalDep, ResourcesDep
from api.resources import Resources
from api.responses import errors
from api.security import Principal, issue_share_token
from schemas import BookingCommand, BookingStatus, contracts, encode
from schemas.base import Model, ServicePoint, ShortText
from schemas.bookings import (
    ActorRole,
    BookingCommandType,
    BookingConflict,
    BookingEventView,
    BookingPage,
    BookingPending,
    BookingView,
    ParcelSize,
    ShareLink,
    TimeWindow,
)
from schemas.contracts import BOOKING_COMMANDS, mirror_key, reply_key

router = APIRouter(prefix="/v1/bookings", tags=["bookings"], responses=errors(401, 403, 404, 409))
_IDEM_NS = uuid.UUID("0b7f3c55-3f5e-4d0e-8a8e-5d2f1f0b6c21")
IDEM_TTL_S = 24 * 3600
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


class BookingIn(Model):
    pickup: ServicePoint
    dropoff: ServicePoint
    parcel_size: ParcelSize = ParcelSize.medium
    notes: ShortText | None = None
    window: TimeWindow | None = None


class CancelIn(Model):
    reason: ShortText | None = None


class DeclineIn(Model):
    reason: ShortText | None = None


class DeliveredIn(Model):
    proof: Annotated[ShortText, Field(min_length=1)]


#: What a command on a booking answers besides the booking.
ACTION: dict[int | str, dict[str, Any]] = {
    202: {"model": BookingPending, "description": "accepted; the booking agent has not answered yet"},
    404: {}, 409: {"model": BookingConflict},
}  # fmt: skip


def visible(principal: Principal, booking: dict[str, Any]) -> bool:
    if principal.sees_all_bookings:
        return True
    if principal.role == "viewer":
        return principal.booking_id == str(booking.get("booking_id"))
    if principal.role == "customer":
        return booking.get("customer_id") == principal.subject
    if principal.role == "driver" and principal.driver_id is not None:
        return booking.get("driver_id") == principal.driver_id
    return False


async def load(res: Resources, principal: Principal, booking_id: uuid.UUID) -> dict[str, Any]:
    raw = await res.redis.get(mirror_key(str(booking_id)))
    booking = orjson.loads(raw) if raw else None
    if booking is None:
        doc = await res.db.bookings.find_one({"_id": str(booking_id)})
        booking = {**doc, "booking_id": doc["_id"]} if doc else None
    if booking is None or not visible(principal, booking):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such booking")
    return booking


def view(booking: dict[str, Any]) -> dict[str, Any]:
    hidden = {"_id", "declined_by"}
    return {k: v for k, v in booking.items() if k not in hidden}


async def decide(res: Resources, cmd: BookingCommand, created: bool = False) -> ORJSONResponse:
    """Write the command (acks=all), then wait for the booking agent's verdict."""
    if not res.kafka.ready or res.kafka.producer is None:
        raise HTTPException(503, "booking service unavailable (Kafka not connected)", headers={"Retry-After": "5"})
    s = res.settings
    try:
        send = res.kafka.producer.send(s.topic(BOOKING_COMMANDS.name), encode(cmd), key=str(cmd.booking_id).encode())
        await asyncio.wait_for(await asyncio.wait_for(send, s.ingest_timeout_s), s.ingest_timeout_s)
    except Exception as exc:
        raise HTTPException(503, f"booking service unavailable: {type(exc).__name__}",
                            headers={"Retry-After": "5"}) from exc  # fmt: skip
    reply = await res.redis.blpop([reply_key(str(cmd.event_id))], timeout=s.booking_reply_timeout_s)
    if reply is None:
        body = {"status": "pending", "booking_id": str(cmd.booking_id), "command_id": str(cmd.event_id)}
        return ORJSONResponse(body, status_code=202)
    verdict = orjson.loads(reply[1])
    booking = verdict.get("booking") or {}
    if not verdict["ok"]:
        if not booking:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such booking")
        return ORJSONResponse({"detail": verdict["error"], "status": booking.get("status")}, status_code=409)
    return ORJSONResponse(view(booking), status_code=201 if created else 200)


def command(principal: Principal, booking_id: uuid.UUID, ctype: BookingCommandType, **fields: Any) -> BookingCommand:
    actor = principal.driver_id if principal.role == "driver" and principal.driver_id else principal.subject
    role = cast(ActorRole, principal.role)  # viewers never reach a command (routes check the role first)
    return BookingCommand(type=ctype, booking_id=booking_id, actor_id=actor, actor_role=role, **fields)


@router.post("", status_code=201, response_model=BookingView, responses={
    200: {"model": BookingView, "description": "the booking this Idempotency-Key already made"},
    202: {"model": BookingPending, "description": "accepted; the booking agent has not answered yet"},
    409: {"model": BookingConflict}, 422: {},
})  # fmt: skip
async def create_booking(
    body: BookingIn, res: ResourcesDep, principal: PrincipalDep, idempotency_key: IdempotencyKey = None
) -> ORJSONResponse:
    """Book a delivery. With ``Idempotency-Key``, repeating the request returns the same booking (200)."""
    if principal.role != "customer":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only customers book deliveries")
    repeated = False
    if idempotency_key:
        booking_id = uuid.uuid5(_IDEM_NS, f"{principal.subject}|{idempotency_key}")
        digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
        key = contracts.idempotency_key(principal.subject, idempotency_key)
        if not await res.redis.set(key, digest, nx=True, ex=IDEM_TTL_S):
            if await res.redis.get(key) != digest:
                raise HTTPException(422, "Idempotency-Key was already used with a different request")
            repeated = True
    else:
        booking_id = uuid.uuid4()
    cmd = command(principal, booking_id, "booking.request", pickup=body.pickup, dropoff=body.dropoff,
                  parcel_size=body.parcel_size, notes=body.notes, window=body.window)  # fmt: skip
    return await decide(res, cmd, created=not repeated)


@router.get("", response_model=BookingPage)
async def list_bookings(
    res: ResourcesDep,
    principal: PrincipalDep,
    status_: Annotated[BookingStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    """Newest first; a customer sees their bookings, a driver the ones offered or assigned to them."""
    q: dict[str, Any] = {}
    if principal.role == "customer":
        q["customer_id"] = principal.subject
    elif principal.role == "driver":
        q["driver_id"] = principal.driver_id
    elif not principal.sees_all_bookings:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "no bookings for this role")
    if status_ is not None:
        q["status"] = status_.value
    docs = await res.db.bookings.find(q).sort("created_at", -1).skip(offset).limit(limit).to_list(limit)
    items = [view({**d, "booking_id": d["_id"]}) for d in docs]
    return {"items": items, "next_offset": offset + limit if len(items) == limit else None}


@router.get("/{booking_id}", response_model=BookingView)
async def get_booking(booking_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep) -> dict[str, Any]:
    return view(await load(res, principal, booking_id))


@router.get("/{booking_id}/events", response_model=list[BookingEventView])
async def booking_events(booking_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep) -> list[BookingEventView]:
    """The booking's timeline, oldest first: every transition the store has (whoever may read the booking)."""
    await load(res, principal, booking_id)  # 404 unless the caller may see it
    cursor = res.db.booking_events.find({"booking_id": str(booking_id)}).sort("version", 1).limit(1000)
    return [BookingEventView.model_validate(d) async for d in cursor]  # on the (booking_id, version) index


@router.post("/{booking_id}/cancel", response_model=BookingView, responses=ACTION)
async def cancel(booking_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep,
                 body: CancelIn | None = None) -> ORJSONResponse:  # fmt: skip
    booking = await load(res, principal, booking_id)
    if principal.role == "driver":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a driver declines an offer instead of cancelling")
    if principal.role == "viewer":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a tracking link only watches")
    reason = body.reason if body else None
    return await decide(res, command(principal, uuid.UUID(booking["booking_id"]), "booking.cancel", reason=reason))


@router.post("/{booking_id}/share", response_model=ShareLink, responses={403: {}, 404: {}})
async def share(booking_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep) -> dict[str, Any]:
    """A read-only tracking link for one booking (its customer or staff): anyone holding it watches
    that booking live (``GET`` and ``WS /v1/notifications``) until ``share_link_ttl_s``, nothing else."""
    booking = await load(res, principal, booking_id)
    if principal.role not in ("customer", "dispatcher", "admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the customer (or staff) shares a booking")
    bid = str(booking["booking_id"])
    token = issue_share_token(res.settings, bid, res.settings.share_link_ttl_s, res.auth.pepper)
    return {
        "booking_id": bid,
        "token": token,
        "path": f"/#/track?booking={bid}&t={token}",
        "expires_in_s": res.settings.share_link_ttl_s,
    }


async def driver_action(booking_id: uuid.UUID, res: Resources, principal: Principal, ctype: BookingCommandType,
                        **fields: Any) -> ORJSONResponse:  # fmt: skip
    await load(res, principal, booking_id)
    if principal.role not in ("driver", "dispatcher", "admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the driver (or staff) does this")
    return await decide(res, command(principal, booking_id, ctype, **fields))


@router.post("/{booking_id}/accept", response_model=BookingView, responses=ACTION)
async def accept(booking_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep) -> ORJSONResponse:
    return await driver_action(booking_id, res, principal, "booking.accept")


@router.post("/{booking_id}/decline", response_model=BookingView, responses=ACTION)
async def decline(booking_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep,
                  body: DeclineIn | None = None) -> ORJSONResponse:  # fmt: skip
    return await driver_action(booking_id, res, principal, "booking.decline", reason=body.reason if body else None)


@router.post("/{booking_id}/arrived", response_model=BookingView, responses=ACTION)
async def arrived(booking_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep) -> ORJSONResponse:
    return await driver_action(booking_id, res, principal, "booking.mark_arrived")


@router.post("/{booking_id}/picked-up", response_model=BookingView, responses=ACTION)
async def picked_up(booking_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep) -> ORJSONResponse:
    return await driver_action(booking_id, res, principal, "booking.mark_picked_up")


@router.post("/{booking_id}/delivered", response_model=BookingView, responses=ACTION)
async def delivered(booking_id: uuid.UUID, body: DeliveredIn, res: ResourcesDep,
                    principal: PrincipalDep) -> ORJSONResponse:  # fmt: skip
    return await driver_action(booking_id, res, principal, "booking.mark_delivered", proof=body.proof)
