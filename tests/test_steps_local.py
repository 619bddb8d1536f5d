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


async def test_clean_replay_from_further_back_than_its_memory_reemits_what_was_accepted() -> None:
    """A catch-up burst of one driver's records, then all of them read again before any commit.

    Far more records than the replay memory keeps: the oldest are no longer remembered one
    by one, yet each still re-emits exactly the pings accepted the first time (not the one
    dropped for low accuracy) and nothing is dead-lettered as ``out_of_order``.
    """
    from streams.replay import KEEP

    rt = LocalRuntime()
    h = StepHarness(rt, cleaner=clean.cleaner(rt))
    n = KEEP * 3
    batches = track("d3", [(52.50 + i * 0.0001, 13.40) for i in range(n * 2)], per_batch=2)
    bad = batches[5].pings[1].model_copy(update={"accuracy_m": 5000.0})
    batches[5] = batches[5].model_copy(update={"pings": [batches[5].pings[0], bad]})
    first = await h.send(*batches)
    assert len(rt.topics[TELEMETRY_DLQ.name].values) == 1  # the low-accuracy fix
    state = dict(rt.tables["clean-last-accepted"])
    again = [await h.replay(i) for i in range(len(batches))]
    assert [[p.seq for i in r for p in i.batch.pings] for r in again] == [[p.seq for p in i.batch.pings] for i in first]
    assert [d.reason for d in rt.topics[TELEMETRY_DLQ.name].values] == ["low_accuracy"]
    assert rt.tables["clean-last-accepted"] == state


async def test_geofence_replay_of_a_record_before_the_entry_invents_no_exit() -> None:
    """A record taken before the driver entered, read again once it is inside.

    It changed nothing, so its memory was never kept: judged against today's state (inside)
    it would emit an exit, and the next record an entry, that never happened.
    """
    rt = LocalRuntime()
    h = StepHarness(rt, steps=[geofence.step(rt, geofence.Zones.fixed([DEPOT]))])
    await h.send(*drive(8))  # ends inside the depot
    events: list[GeofenceEvent] = rt.topics[GEOFENCE_EVENTS.name].values
    assert [e.type for e in events] == ["geofence.enter"]
    await h.replay(0)
    assert [e.type for e in rt.topics[GEOFENCE_EVENTS.name].values] == ["geofence.enter"]


async def test_geofence_step_reports_cross_between_records_and_replays_it_once() -> None:
    """Fixes 90 m apart, one per record, past a 30 m kiosk: the previous fix is kept in the step's table."""
    kiosk = Zone.from_doc({"_id": "kiosk", "name": "Kiosk", "detect": ["enter", "exit", "cross"],
                           "circle": {"center": {"lat": 52.5175, "lon": 13.40}, "radius_m": 30.0}})  # fmt: skip
    rt = LocalRuntime()
    h = StepHarness(rt, steps=[geofence.step(rt, geofence.Zones.fixed([kiosk]))])
    batches = track("d1", [(52.5155 + i * 0.0008, 13.40) for i in range(6)], every_s=10.0, per_batch=1)
    await h.send(*batches)  # 52.5155, .5163, .5171, .5179 (...): .5171 and .5179 are 44 m either side of it
    events: list[GeofenceEvent] = rt.topics[GEOFENCE_EVENTS.name].values
    assert [(e.type, e.zone_id, e.at) for e in events] == [("geofence.cross", "kiosk", batches[3].pings[0].ts)]
    await h.replay(3)
    again = rt.topics[GEOFENCE_EVENTS.name].values[1:]
    assert [e.event_id for e in again] == [events[0].event_id]
    assert rt.tables["geofence-inside"][b"d1"]["last"] == [batches[-1].pings[0].lat, 13.40]
