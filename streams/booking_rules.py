"""The booking state machine as a pure function (no I/O), unit-tested alone.

requested → offered → assigned → driver_arrived → picked_up → delivered, with
cancelled (customer or staff, before pick-up) and expired (the platform, while
nobody has the job). A declined or timed-out offer goes back to requested, and the
driver is remembered so the next offer goes to someone else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas import BookingCommand, BookingEvent, BookingStatus, deterministic_event_id

S = BookingStatus
STAFF = ("dispatcher", "admin")
CANCELLABLE = (S.requested, S.offered, S.assigned, S.driver_arrived)
#: What each command is called in an error message ("cannot accept a booking that is ...").
VERBS = {
    "booking.request": "request",
    "booking.cancel": "cancel",
    "booking.accept": "accept",
    "booking.decline": "decline",
    "booking.mark_arrived": "mark arrival on",
    "booking.mark_picked_up": "mark pick-up on",
    "booking.mark_delivered": "mark delivery on",
    "booking.offer": "offer",
    "booking.offer_timeout": "time out the offer of",
    "booking.expire": "expire",
}


@dataclass
class Decision:
    ok: bool
    state: dict[str, Any] | None
    events: list[BookingEvent] = field(default_factory=list)
    error: str | None = None


def _reject(state: dict[str, Any] | None, message: str) -> Decision:
    return Decision(False, state, [], message)


def _wrong_state(cmd: BookingCommand, state: dict[str, Any]) -> Decision:
    return _reject(state, f"cannot {VERBS[cmd.type]} a booking that is {state['status']}")


def event_of(state: dict[str, Any], etype: str, cmd: BookingCommand, now: datetime) -> BookingEvent:
    return BookingEvent(
        event_id=deterministic_event_id("booking", cmd.event_id, etype),
        occurred_at=now,
        type=etype,
        booking_id=cmd.booking_id,
        status=state["status"],
        customer_id=state["customer_id"],
        driver_id=state.get("driver_id"),
        pickup=state.get("pickup"),
        dropoff=state.get("dropoff"),
        parcel_size=state.get("parcel_size"),
        notes=state.get("notes"),
        window=state.get("window"),
        offer_deadline=state.get("offer_deadline"),
        eta_s=state.get("eta_s"),
        reason=state.get("reason"),
        proof=state.get("proof"),
        created_at=state.get("created_at"),
        command_id=cmd.event_id,
        version=state["version"],
    )


def _to(state: dict[str, Any], status: S, etype: str, cmd: BookingCommand, now: datetime, **changes: Any) -> Decision:
    new = {**state, **changes, "status": status.value, "version": state["version"] + 1, "updated_at": now.isoformat()}
    return Decision(True, new, [event_of(new, etype, cmd, now)])


def apply(state: dict[str, Any] | None, cmd: BookingCommand, now: datetime) -> Decision:
    """Decide ``cmd`` against the booking's current ``state`` (None: unknown booking).

    Who may ask is checked here as well as in the API: a command on Kafka is not
    trusted more than the caller who caused it.
    """
    if state is None:
        if cmd.type != "booking.request":
            return _reject(None, "no such booking")
        new: dict[str, Any] = {
            "booking_id": str(cmd.booking_id),
            "status": S.requested.value,
            "customer_id": cmd.actor_id,
            "pickup": cmd.pickup.model_dump() if cmd.pickup else None,
            "dropoff": cmd.dropoff.model_dump() if cmd.dropoff else None,
            "parcel_size": cmd.parcel_size.value if cmd.parcel_size else None,
            "notes": cmd.notes,
            "window": cmd.window.model_dump(mode="json") if cmd.window else None,
            "driver_id": None,
            "declined_by": [],
            "created_at": now.isoformat(),
            "version": 1,
        }
        return Decision(True, new, [event_of(new, "booking.requested", cmd, now)])

    status = S(state["status"])
    t, role, actor = cmd.type, cmd.actor_role, cmd.actor_id
    if t == "booking.request":
        # The same Idempotency-Key again: the booking exists, nothing changes.
        return Decision(True, state) if state["customer_id"] == actor else _reject(state, "no such booking")
    if t == "booking.cancel":
        if role not in STAFF and actor != state["customer_id"]:
            return _reject(state, "only the customer or staff may cancel")
        if status not in CANCELLABLE:
            return _wrong_state(cmd, state)
        return _to(state, S.cancelled, "booking.cancelled", cmd, now, reason=cmd.reason or f"cancelled by {role}")
    if t == "booking.expire":
        if status not in (S.requested, S.offered):
            return _wrong_state(cmd, state)
        return _to(state, S.expired, "booking.expired", cmd, now, reason=cmd.reason or "no driver found",
                   driver_id=None, offer_deadline=None)  # fmt: skip
    if t == "booking.offer":
        if status != S.requested:
            return _wrong_state(cmd, state)
        deadline = cmd.offer_deadline.isoformat() if cmd.offer_deadline else None
        return _to(state, S.offered, "booking.offered", cmd, now, driver_id=cmd.driver_id, offer_deadline=deadline,
                   eta_s=cmd.eta_s)  # fmt: skip
    if t in ("booking.decline", "booking.offer_timeout"):
        driver = cmd.driver_id if t == "booking.offer_timeout" else actor
        if status != S.offered:
            return _wrong_state(cmd, state)
        if state.get("driver_id") != driver:
            return _reject(state, "this offer is for another driver")
        reason = "offer timed out" if t == "booking.offer_timeout" else (cmd.reason or "declined by driver")
        declined = [*state.get("declined_by", []), driver]
        return _to(state, S.requested, "booking.declined", cmd, now, driver_id=None, offer_deadline=None,
                   declined_by=declined, reason=reason, eta_s=None)  # fmt: skip
    # From here on only the driver who has (or is offered) the job, staff acting for it, or
    # the platform itself (arrival detected by the pickup geofence).
    if role not in (*STAFF, "system") and actor != state.get("driver_id"):
        return _reject(state, "this booking is not assigned to you")
    if t == "booking.accept":
        if status != S.offered:
            return _wrong_state(cmd, state)
        deadline = state.get("offer_deadline")
        if deadline and now > datetime.fromisoformat(deadline):
            return _reject(state, "the offer has expired")
        return _to(state, S.assigned, "booking.assigned", cmd, now, offer_deadline=None, reason=None)
    if t == "booking.mark_arrived":
        if status != S.assigned:
            return _wrong_state(cmd, state)
        return _to(state, S.driver_arrived, "booking.driver_arrived", cmd, now)
    if t == "booking.mark_picked_up":
        if status not in (S.assigned, S.driver_arrived):
            return _wrong_state(cmd, state)
        return _to(state, S.picked_up, "booking.picked_up", cmd, now)
    if t == "booking.mark_delivered":
        if status != S.picked_up:
            return _wrong_state(cmd, state)
        if not cmd.proof:
            return _reject(state, "a delivery needs a proof (signature, photo reference or code)")
        return _to(state, S.delivered, "booking.delivered", cmd, now, proof=cmd.proof)
    return _reject(state, f"unknown command {t}")


def public_view(state: dict[str, Any]) -> dict[str, Any]:
    """What callers see of a booking (the API and the Redis mirror)."""
    keys = ("booking_id", "status", "customer_id", "driver_id", "pickup", "dropoff", "parcel_size", "notes", "window",
            "offer_deadline", "eta_s", "reason", "proof", "created_at", "updated_at", "version")  # fmt: skip
    return {k: state.get(k) for k in keys}
