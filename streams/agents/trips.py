"""Trips and stops from cleaned telemetry, as an SDK agent (``agents.trips``).

A stop begins when a driver's fixes stay within ``stop_radius_m`` of one fix (the
anchor) for ``stop_min_s``; it is reported from the anchor's time, so the trip before
it ends where the driver came to rest, not five minutes later. The first fix outside
the radius ends the stop at the last fix inside it and opens the next trip there.
GPS jitter inside the radius is neither distance nor a new trip. An open trip reports
its progress every ``progress_s`` of movement (so a summary of today counts the trip under way);
every event carries ``rev``-ordered data under the trip's or stop's id, and a store
keeps the latest.

A stop is seen only when a fix arrives: a phone that falls silent while parked has its
stop reported from its next fix, with the silent time in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.config import Settings
from schemas import GpsPing, TelemetryBatch, deterministic_event_id
from schemas.contracts import TRIPS
from schemas.reports import MovementEvent, Stop, Trip
from streams.geo import haversine_m
from streams.sdk import TELEMETRY, Agent, Context

NAME = "trips"


@dataclass(frozen=True)
class TripRules:
    stop_min_s: float = 300.0
    stop_radius_m: float = 50.0
    progress_s: float = 60.0

    @classmethod
    def of(cls, s: Settings) -> TripRules:
        return cls(s.stop_min_s, s.stop_radius_m, s.trip_progress_s)


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class _Emitter:
    def __init__(self, ctx: Context[MovementEvent], driver: str) -> None:
        self.ctx, self.driver = ctx, driver

    def trip(self, kind: str, trip: dict[str, Any], rev: int) -> None:
        self._emit(f"trip.{kind}", rev, trip=Trip.model_validate(trip))

    def stop(self, kind: str, stop: dict[str, Any], rev: int) -> None:
        self._emit(f"stop.{kind}", rev, stop=Stop.model_validate(stop))

    def _emit(self, type_: str, rev: int, **what: Any) -> None:
        item = what.get("trip") or what.get("stop")
        first = item.first_seq if item is not None else -1
        eid = deterministic_event_id(NAME, self.driver, type_, first, rev)
        self.ctx.emit(MovementEvent(event_id=eid, type=type_, driver_id=self.driver, rev=rev, **what))
        self.ctx.count(type_)


def step(st: dict[str, Any], rules: TripRules, p: GpsPing, out: _Emitter) -> None:
    """One fix against the driver's state (``last``, ``anchor``, the open ``trip`` or ``stop``)."""
    t, here = p.ts.timestamp(), [p.ts.timestamp(), p.lat, p.lon, p.seq]
    last = st.get("last")
    if last is None:
        st.update(last=here, anchor=here, pend_max=0.0, trip=None, stop=None)
        return
    anchor = st["anchor"]
    # Distance is counted anchor to anchor (chords of at most the radius): GPS jitter while
    # parked, or in slow traffic, adds nothing. A speed the device measured beats one derived.
    chord = haversine_m(anchor[1], anchor[2], p.lat, p.lon)
    if chord <= rules.stop_radius_m:
        st["pend_max"] = max(st["pend_max"], p.speed_mps or 0.0)
        if st["stop"] is None and t - anchor[0] >= rules.stop_min_s:
            if (trip := st["trip"]) is not None:  # it ended where the driver came to rest
                trip.update(end=_at(anchor[0]).isoformat(), end_lat=anchor[1], end_lon=anchor[2],
                            driving_s=round(anchor[0] - trip["_t0"], 3))  # fmt: skip
                out.trip("closed", _public(trip), p.seq)
                st["trip"] = None
            stop = {"stop_id": f"{p.driver_id}:{anchor[3]}", "driver_id": p.driver_id, "first_seq": anchor[3],
                          "start": _at(anchor[0]).isoformat(), "lat": anchor[1], "lon": anchor[2], "_t0": anchor[0],
                          "duration_s": round(t - anchor[0], 3)}  # fmt: skip
            st["stop"] = stop
            out.stop("opened", _public(stop), p.seq)
    else:
        if (stop := st["stop"]) is not None:  # it ended at the last fix inside the radius
            stop.update(end=_at(last[0]).isoformat(), duration_s=round(last[0] - stop["_t0"], 3))
            out.stop("closed", _public(stop), p.seq)
            st["stop"] = None
            moved = haversine_m(last[1], last[2], p.lat, p.lon)
            st["trip"] = trip = _open(p.driver_id, last, moved, _speed(p, moved, t - last[0]))
            out.trip("opened", _public(trip), p.seq)
        elif st["trip"] is None:  # the first movement heard of: from where the driver was
            speed = max(st["pend_max"], _speed(p, chord, t - anchor[0]))
            st["trip"] = trip = _open(p.driver_id, anchor, chord, speed)
            out.trip("opened", _public(trip), p.seq)
        else:
            trip = st["trip"]
            trip["distance_m"] = round(trip["distance_m"] + chord, 3)
            trip["max_speed_mps"] = max(trip["max_speed_mps"], st["pend_max"], _speed(p, chord, t - anchor[0]))
            if t - trip["_reported"] >= rules.progress_s:
                _progress(trip, t)
                out.trip("opened", _public(trip), p.seq)
        st.update(anchor=here, pend_max=0.0)
    st["last"] = here


def _speed(p: GpsPing, metres: float, seconds: float) -> float:
    if p.speed_mps is not None:
        return p.speed_mps
    return metres / seconds if seconds > 0 else 0.0


def _open(driver: str, at: list[Any], distance: float, speed: float) -> dict[str, Any]:
    return {"trip_id": f"{driver}:{at[3]}", "driver_id": driver, "first_seq": at[3], "start": _at(at[0]).isoformat(),
            "start_lat": at[1], "start_lon": at[2], "distance_m": round(distance, 3), "max_speed_mps": speed,
            "driving_s": 0.0, "_t0": at[0], "_reported": at[0]}  # fmt: skip


def _progress(trip: dict[str, Any], t: float) -> None:
    trip["driving_s"] = round(t - trip["_t0"], 3)
    trip["_reported"] = t


def _public(item: dict[str, Any]) -> dict[str, Any]:
    """Without the agent's own bookkeeping (fields starting with ``_``)."""
    return {k: v for k, v in item.items() if not k.startswith("_")}


def agent(rules: TripRules | None = None) -> Agent[TelemetryBatch, MovementEvent]:
    """The trips agent with ``rules`` (the worker passes ``TripRules.of(settings)``)."""
    chosen = rules or TripRules()
    built: Agent[TelemetryBatch, MovementEvent] = Agent(NAME, TELEMETRY, MovementEvent, description=TRIPS.doc)
    assert built.topic.name == TRIPS.name  # the contract the store and the API read

    @built.handle
    def on_batch(batch: TelemetryBatch, ctx: Context[MovementEvent]) -> None:
        out = _Emitter(ctx, batch.driver_id)
        for p in batch.pings:
            step(ctx.state, chosen, p, out)

    return built
