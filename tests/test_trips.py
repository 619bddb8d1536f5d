"""The trips agent's logic (``streams.agents.trips``), in memory through the SDK's harness."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest

from schemas.reports import MovementEvent
from streams.agents.trips import TripRules, agent
from streams.geo import haversine_m
from streams.sdk.testing import Harness, track

LAT0, LON0 = 52.50, 13.40
DLAT = 9e-5  # ~10 m north per second at 1 Hz
DLON = 9e-5 / math.cos(math.radians(LAT0))  # ~10 m east


def drive(
    seconds: int, lat: float, lon: float, dlat: float = DLAT, dlon: float = 0.0
) -> list[tuple[float, float, float]]:
    return [(lat + i * dlat, lon + i * dlon, 10.0) for i in range(1, seconds + 1)]


def parked(seconds: int, lat: float, lon: float, jitter_m: float = 12.0) -> list[tuple[float, float, float]]:
    rnd = random.Random(7)
    k = jitter_m / 111_000
    return [(lat + rnd.uniform(-k, k), lon + rnd.uniform(-k, k), 0.0) for _ in range(seconds)]


def day(*legs: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    return [(LAT0, LON0, 0.0)] + [p for leg in legs for p in leg]


def closed(events: list[MovementEvent]) -> list[MovementEvent]:
    return [e for e in events if e.closed]


def test_a_drive_a_stop_and_a_drive() -> None:
    north = drive(120, LAT0, LON0)
    stop_at = north[-1]
    east = drive(60, stop_at[0], stop_at[1], dlat=0.0, dlon=DLON)
    points = day(north, parked(400, stop_at[0], stop_at[1]), east)
    h = Harness(agent(TripRules(stop_min_s=300, stop_radius_m=50, progress_s=60)))
    out = h.send(*track("d1", points))

    kinds = [e.type for e in out if e.type != "trip.opened"]
    assert kinds == ["trip.closed", "stop.opened", "stop.closed"], [e.type for e in out]
    trip = next(e.trip for e in out if e.type == "trip.closed" and e.trip)
    assert trip.trip_id == "d1:0" and trip.first_seq == 0  # from where the driver stood
    assert trip.distance_m == pytest.approx(1200, rel=0.03)  # parked jitter is no distance
    assert 110 <= trip.driving_s <= 121 and trip.max_speed_mps == 10.0
    assert trip.end_lat is not None and haversine_m(trip.end_lat, trip.end_lon or 0, stop_at[0], stop_at[1]) < 50
    stop = next(e.stop for e in out if e.type == "stop.closed" and e.stop)
    assert stop.duration_s == pytest.approx(400, abs=12) and stop.end is not None
    assert stop.start == trip.end  # the trip ends where the stop starts
    assert haversine_m(stop.lat, stop.lon, stop_at[0], stop_at[1]) < 50
    opened = [e for e in out if e.type == "trip.opened"]
    second = opened[-1].trip
    assert second is not None and second.trip_id != trip.trip_id and second.start == stop.end
    # The trip under way reported its progress every 60 s, each report later and further.
    progress = [e for e in opened if e.trip and e.trip.trip_id == trip.trip_id]
    assert len(progress) in (2, 3)  # opened, then a report per 60 s of movement (~120 s of it)
    revs = [e.rev for e in progress]
    distances = [e.trip.distance_m for e in progress if e.trip]
    assert revs == sorted(set(revs)) and distances == sorted(distances) and distances[1] > 500
    assert len({e.event_id for e in out}) == len(out)


def test_a_pause_shorter_than_the_minimum_is_no_stop() -> None:
    north = drive(60, LAT0, LON0)
    on = drive(60, north[-1][0], north[-1][1])
    h = Harness(agent(TripRules(stop_min_s=300, stop_radius_m=50, progress_s=3600)))
    out = h.send(*track("d2", day(north, parked(200, north[-1][0], north[-1][1]), on)))
    assert [e.type for e in out] == ["trip.opened"]  # one trip, still open: the light was no stop
    state = h.state("d2")["trip"]
    assert state["trip_id"] == "d2:0" and state["distance_m"] == pytest.approx(1200, rel=0.05)


def test_a_stop_is_seen_from_the_fix_after_a_silent_phone() -> None:
    north = drive(30, LAT0, LON0)
    last = north[-1]
    h = Harness(agent(TripRules(stop_min_s=300, stop_radius_m=50)))
    h.send(*track("d3", day(north)))
    # The phone is silent for 20 minutes, parked, then sends one fix where it stood.
    then = h.sent[-1].pings[-1].ts + timedelta(minutes=20)
    [late] = track("d3", [(last[0] + 1e-5, last[1], 0.0)], seq0=31, start=then)
    out = h.send(late)
    assert [e.type for e in out] == ["trip.closed", "stop.opened"]


def test_replayed_records_emit_what_they_emitted() -> None:
    north = drive(120, LAT0, LON0)
    h = Harness(agent(TripRules(stop_min_s=300, stop_radius_m=50)))
    batches = track("d4", day(north, parked(400, north[-1][0], north[-1][1])), per_batch=10)
    first = [h.send(b) for b in batches]
    for i, emitted in enumerate(first):
        assert h.replay(i) == emitted
    assert [e.type for emitted in first for e in emitted if e.closed] == ["trip.closed"]
    assert h.state("d4")["stop"]["stop_id"].startswith("d4:")  # the replays changed no state: the stop is open
