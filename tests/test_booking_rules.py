"""The booking state machine and the assignment step, alone (pure functions)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import BookingCommand, GeoPoint
from streams.booking_rules import apply
from streams.matching import NO_ROUTE, assign, greedy

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BID = uuid.uuid4()


def cmd(ctype: str, actor: str = "c1", role: str = "customer", **kw: Any) -> BookingCommand:
    return BookingCommand(type=ctype, booking_id=BID, actor_id=actor, actor_role=role, **kw)  # type: ignore[arg-type]


def run(*cmds: BookingCommand) -> dict[str, Any]:
    state = None
    for c in cmds:
        d = apply(state, c, NOW)
        assert d.ok, d.error
        state = d.state
    assert state is not None
    return state


REQUEST = cmd("booking.request", pickup=GeoPoint(lat=52.5, lon=13.4), dropoff=GeoPoint(lat=52.52, lon=13.41))
OFFER = cmd("booking.offer", "matching", "system", driver_id="d1", offer_deadline=NOW + timedelta(seconds=30))


def test_happy_path_emits_one_event_per_transition_with_growing_version() -> None:
    state, seen = None, []
    steps = [
        cmd("booking.accept", "d1", "driver"),
        cmd("booking.mark_arrived", "d1", "driver"),
        cmd("booking.mark_picked_up", "d1", "driver"),
        cmd("booking.mark_delivered", "d1", "driver", proof="sig"),
    ]
    for c in (REQUEST, OFFER, *steps):
        d = apply(state, c, NOW)
        assert d.ok, d.error
        state = d.state
        seen += [(e.type, e.status.value, e.version) for e in d.events]
    assert seen == [("booking.requested", "requested", 1), ("booking.offered", "offered", 2),
                    ("booking.assigned", "assigned", 3), ("booking.driver_arrived", "driver_arrived", 4),
                    ("booking.picked_up", "picked_up", 5), ("booking.delivered", "delivered", 6)]  # fmt: skip
    assert state is not None and state["proof"] == "sig" and state["driver_id"] == "d1"


@pytest.mark.parametrize(
    ("setup", "command", "message"),
    [
        ([], cmd("booking.accept", "d1", "driver"), "no such booking"),
        ([REQUEST], cmd("booking.accept", "d1", "driver"), "not assigned to you"),
        ([REQUEST, OFFER], cmd("booking.accept", "d2", "driver"), "not assigned to you"),
        (
            [REQUEST, OFFER],
            cmd("booking.mark_delivered", "d1", "driver", proof="x"),
            "cannot mark delivery on a booking that is offered",
        ),
        (
            [REQUEST, OFFER, cmd("booking.accept", "d1", "driver")],
            cmd("booking.offer", "matching", "system", driver_id="d2", offer_deadline=NOW),
            "cannot offer a booking that is assigned",
        ),
        ([REQUEST], cmd("booking.cancel", "c2"), "only the customer or staff"),
        (
            [REQUEST, OFFER, cmd("booking.accept", "d1", "driver"), cmd("booking.mark_picked_up", "d1", "driver")],
            cmd("booking.cancel"),
            "cannot cancel a booking that is picked_up",
        ),
        (
            [REQUEST, OFFER, cmd("booking.accept", "d1", "driver"), cmd("booking.mark_picked_up", "d1", "driver")],
            cmd("booking.mark_delivered", "d1", "driver"),
            "needs a proof",
        ),
        (
            [REQUEST, OFFER, cmd("booking.accept", "d1", "driver")],
            cmd("booking.expire", "matching", "system"),
            "cannot expire a booking that is assigned",
        ),
    ],
)
def test_invalid_transitions_are_rejected_naming_the_state(setup: list[BookingCommand], command: BookingCommand,
                                                           message: str) -> None:  # fmt: skip
    state = run(*setup) if setup else None
    d = apply(state, command, NOW)
    assert not d.ok and message in (d.error or "") and d.events == []
    assert d.state == state  # nothing changed


def test_late_accept_is_refused() -> None:
    state = run(REQUEST, OFFER)
    d = apply(state, cmd("booking.accept", "d1", "driver"), NOW + timedelta(seconds=31))
    assert not d.ok and d.error == "the offer has expired"


def test_decline_and_timeout_return_to_requested_and_remember_the_driver() -> None:
    state = run(REQUEST, OFFER, cmd("booking.decline", "d1", "driver"))
    assert state["status"] == "requested" and state["declined_by"] == ["d1"] and state["driver_id"] is None
    offer2 = cmd("booking.offer", "matching", "system", driver_id="d2", offer_deadline=NOW + timedelta(seconds=5))
    state2 = apply(state, offer2, NOW).state
    d = apply(state2, cmd("booking.offer_timeout", "matching", "system", driver_id="d2"), NOW)
    assert d.ok and d.state is not None and d.state["declined_by"] == ["d1", "d2"]
    assert d.events[0].type == "booking.declined" and d.events[0].reason == "offer timed out"
    # A timeout for a driver that no longer has the offer changes nothing.
    stale = apply(d.state, cmd("booking.offer_timeout", "matching", "system", driver_id="d1"), NOW)
    assert not stale.ok and stale.state == d.state


def test_repeated_request_is_idempotent_and_event_ids_are_deterministic() -> None:
    state = run(REQUEST)
    again = apply(state, REQUEST, NOW)
    assert again.ok and again.events == [] and again.state == state
    assert apply(None, REQUEST, NOW).events[0].event_id == apply(None, REQUEST, NOW).events[0].event_id


def test_batched_assignment_beats_greedy_on_the_classic_case() -> None:
    # Booking 0 arrives first; driver A is nearest to both, but booking 1 has no one else close.
    costs = [[100.0, 150.0], [110.0, 900.0]]
    g = greedy(costs)
    b = assign(costs)
    assert g == [(0, 0), (1, 1)] and sum(costs[r][c] for r, c in g) == 1000
    assert sorted(b) == [(0, 1), (1, 0)] and sum(costs[r][c] for r, c in b) == 260


def test_assignment_never_uses_impossible_pairs() -> None:
    costs = [[NO_ROUTE, 5.0], [NO_ROUTE, 7.0]]
    pairs = assign(costs)
    assert len(pairs) == 1 and all(costs[r][c] < NO_ROUTE for r, c in pairs)
    assert assign([]) == [] and assign([[NO_ROUTE]]) == []
