"""Built-in telemetry steps run in memory on the local backend (streams.local): no servers, milliseconds.

The same ``cleaner(rt)`` and ``geofence.step(rt)`` the worker installs, handed a LocalRuntime:
what they send, dead-letter and keep in their tables is checked, and a record read again (a
worker's replay after a crash) must emit what it emitted and change nothing.
"""

from __future__ import annotations

import time
from datetime import timedelta

from schemas import GeofenceEvent, TelemetryBatch
from schemas.contracts import GEOFENCE_EVENTS, TELEMETRY_DLQ
from streams import clean, geofence
from streams.geo import Zone
from streams.local import LocalRuntime, StepHarness
from streams.sdk.testing import track

DEPOT = Zone.from_doc({"_id": "depot", "name": "Depot", "circle": {"center": {"lat": 52.52, "lon": 13.40},
                                                                   "radius_m": 150.0}})  # fmt: skip


def drive(points: int = 12) -> list[TelemetryBatch]:
    """Towards the depot, through it and out: ~90 m a step along a line of longitude."""
    return track("d1", [(52.5155 + i * 0.0008, 13.40) for i in range(points)], every_s=10.0, per_batch=2)


async def test_geofence_step_emits_enter_then_exit_and_a_replay_emits_the_same() -> None:
    t0 = time.perf_counter()
    rt = LocalRuntime()
    h = StepHarness(rt, steps=[geofence.step(rt, geofence.Zones.fixed([DEPOT]))])
    await h.send(*drive())
    events: list[GeofenceEvent] = rt.topics[GEOFENCE_EVENTS.name].values
    assert [(e.type, e.zone_id) for e in events] == [("geofence.enter", "depot"), ("geofence.exit", "depot")]
    enter, exit_ = events
    assert enter.at < exit_.at and enter.zone_name == "Depot"
    state = dict(rt.tables["geofence-inside"])
    # The record that held the entry, read again: the same event (same id), the state untouched.
    entered_at = next(i for i, r in enumerate(h.records) if any(p.seq == _seq(enter) for p in r.value.pings))
    await h.replay(entered_at)
    again = rt.topics[GEOFENCE_EVENTS.name].values[2:]
    assert [(e.type, e.event_id) for e in again] == [("geofence.enter", enter.event_id)]
    assert rt.tables["geofence-inside"] == state
    assert time.perf_counter() - t0 < 1.0


def _seq(e: GeofenceEvent) -> int:
    return next(p.seq for b in drive() for p in b.pings if p.ts == e.at)


async def test_clean_forwards_good_batches_dead_letters_bad_pings_and_replays_the_same() -> None:
    t0 = time.perf_counter()
    rt = LocalRuntime()
    h = StepHarness(rt, cleaner=clean.cleaner(rt))
    first, second = track("d2", [(52.50, 13.40), (52.5001, 13.40), (52.5002, 13.40), (52.5003, 13.40)], per_batch=2)
    later = first.pings[0].ts + timedelta(seconds=4)
    jump = track("d2", [(52.5004, 13.40), (53.9, 13.40), (52.5005, 13.40)], start=later, seq0=4,
                 per_batch=3)[0]  # seq 5 is 155 km from seq 4 a second later  # fmt: skip
    items = await h.send(first, second)
    # Wholly valid device batches: their own bytes straight to telemetry.clean through the producer.
    assert [[p.seq for p in i.batch.pings] for i in items] == [[0, 1], [2, 3]]
    assert len(rt.local_app.produced) == 2 and rt.local_app.produced[0][0].endswith("telemetry.clean")
    items = await h.send(jump)
    assert [p.seq for p in items[0].batch.pings] == [4, 6]  # the jump is refused, the fix after it is not
    dlq = rt.topics[TELEMETRY_DLQ.name].values
    assert [(d.reason, d.key) for d in dlq] == [("impossible_jump", "d2")]
    state = dict(rt.tables["clean-last-accepted"])
    replayed = await h.replay(2)  # the batch with the jump, read again after a crash
    assert [p.seq for p in replayed[0].batch.pings] == [4, 6]
    assert len(rt.topics[TELEMETRY_DLQ.name].values) == 1  # not dead-lettered twice
    assert rt.tables["clean-last-accepted"] == state
    assert time.perf_counter() - t0 < 1.0
