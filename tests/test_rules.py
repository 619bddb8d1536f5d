"""Pure rules: each clean filter with an input that must fail, fence semantics, the zone prefilter."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from schemas import GpsPing
from streams.geo import Zone, ZoneIndex, classify, haversine_m
from streams.rules import CleanLimits, clean_pings, fence_changes

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
LIMITS = CleanLimits(max_accuracy_m=50, max_speed_mps=70)


def ping(seq: int, dt: float, lat: float = 52.5, lon: float = 13.4, acc: float | None = 5.0) -> GpsPing:
    return GpsPing(driver_id="d", seq=seq, ts=T0 + timedelta(seconds=dt), lat=lat, lon=lon, accuracy_m=acc)


def reasons(bad: list[tuple[GpsPing, str, str]]) -> list[tuple[int, str]]:
    return [(p.seq, r) for p, r, _ in bad]


def test_good_track_passes_and_state_is_last_fix() -> None:
    pings = [ping(i, i * 5, lat=52.5 + i * 1e-4).model_copy(update={"speed_mps": i, "heading_deg": 10 * i})
             for i in range(5)]  # fmt: skip
    good, bad, state = clean_pings(None, pings, LIMITS)
    assert [p.seq for p in good] == [0, 1, 2, 3, 4] and not bad
    last = {"seq": 4, "ts": (T0 + timedelta(seconds=20)).isoformat(), "lat": 52.5004, "lon": 13.4,
            "speed_mps": 4, "heading_deg": 40}  # fmt: skip
    assert state == last  # the driver's state, as the table keeps it (streams.driver_state)
    # A batch with nothing accepted leaves the state as it was, speed and heading included.
    good, bad, after = clean_pings(state, [ping(3, 15)], LIMITS)
    assert not good and reasons(bad) == [(3, "out_of_order")] and after == last


def test_duplicate_seq_and_duplicate_timestamp() -> None:
    _, _, state = clean_pings(None, [ping(1, 0)], LIMITS)
    good, bad, _ = clean_pings(state, [ping(1, 0), ping(2, 0)], LIMITS)
    assert not good
    assert reasons(bad) == [(1, "duplicate"), (2, "duplicate")]


def test_out_of_order_older_than_last_accepted() -> None:
    _, _, state = clean_pings(None, [ping(5, 50)], LIMITS)
    good, bad, _ = clean_pings(state, [ping(4, 40), ping(6, 45)], LIMITS)
    assert not good and reasons(bad) == [(4, "out_of_order"), (6, "out_of_order")]


def test_low_accuracy() -> None:
    good, bad, state = clean_pings(None, [ping(1, 0, acc=500)], LIMITS)
    assert not good and reasons(bad) == [(1, "low_accuracy")] and state is None


def test_impossible_jump_is_judged_against_last_accepted_fix() -> None:
    # 0.1° of latitude (~11 km) in 10 s is ~1100 m/s; the fix after it is fine relative to seq 1.
    pings = [ping(1, 0), ping(2, 10, lat=52.6), ping(3, 20, lat=52.5005)]
    good, bad, _ = clean_pings(None, pings, LIMITS)
    assert [p.seq for p in good] == [1, 3]
    assert reasons(bad) == [(2, "impossible_jump")]


def test_device_order_by_sequence() -> None:
    good, bad, _ = clean_pings(None, [ping(2, 2), ping(1, 1)], LIMITS)
    assert [p.seq for p in good] == [1, 2] and not bad


def circle(zid: str, lat: float, lon: float, r: float, dwell: float | None = None) -> Zone:
    return Zone.from_doc({"_id": zid, "name": zid, "circle": {"center": {"lat": lat, "lon": lon}, "radius_m": r},
                          "dwell_s": dwell})  # fmt: skip


def square(zid: str, lat: float, lon: float, d: float) -> Zone:
    pts = [(lat - d, lon - d), (lat - d, lon + d), (lat + d, lon + d), (lat + d, lon - d)]
    return Zone.from_doc({"_id": zid, "name": zid, "polygon": [{"lat": a, "lon": b} for a, b in pts]})


def test_enter_dwell_exit_sequence() -> None:
    index = ZoneIndex([circle("depot", 52.5, 13.4, 200, dwell=60)])
    inside: dict[str, dict[str, object]] = {}
    kinds = []
    for p in [ping(1, 0, lat=52.51), ping(2, 10, lat=52.5), ping(3, 40, lat=52.5), ping(4, 80, lat=52.5),
              ping(5, 90, lat=52.5), ping(6, 100, lat=52.51)]:  # fmt: skip
        kinds += [(c.kind, p.seq) for c in fence_changes(inside, p, index, default_dwell_s=300)]
    assert kinds == [("enter", 2), ("dwell", 4), ("exit", 6)]
    assert inside == {}


def test_polygon_and_deleted_zone_counts_as_exit() -> None:
    zone = square("sq", 52.5, 13.4, 0.01)
    inside: dict[str, dict[str, object]] = {}
    assert [c.kind for c in fence_changes(inside, ping(1, 0), ZoneIndex([zone]), 300)] == ["enter"]
    assert [c.kind for c in fence_changes(inside, ping(2, 5), ZoneIndex([]), 300)] == ["exit"]


def test_prefilter_returns_no_candidates_far_away_and_exact_near() -> None:
    zones = [circle(f"z{i}", 52.0 + i * 0.05, 13.0, 300) for i in range(200)]
    index = ZoneIndex(zones)
    assert index.candidates(-33.86, 151.2) == []  # Sydney: nothing to test exactly
    assert [z.zone_id for z in index.containing(52.0 + 7 * 0.05, 13.0)] == ["z7"]
    # Just outside z7's radius: may be a candidate, must not be contained.
    assert index.containing(52.0 + 7 * 0.05 + 0.004, 13.0) == []


def test_a_huge_zone_is_indexed_on_few_coarse_cells() -> None:
    index = ZoneIndex([square("country", 50, 10, 3.0)])
    res, interior, boundary = classify(index.zones["country"])
    assert res < 7 and len(interior) + len(boundary) <= 600
    assert [z.zone_id for z in index.containing(51, 11)] == ["country"]
    assert index.containing(53.2, 11) == [] and index.containing(46.8, 11) == []
    assert [z.zone_id for z in index.containing(52.9, 12.9)] == ["country"]  # near a corner: exact test


def test_the_index_answers_as_testing_every_zone() -> None:
    """Dense overlapping circles and polygons of many sizes: cell-decided answers equal brute force."""
    rnd = random.Random(11)
    zones = []
    for i in range(400):
        lat, lon = 52.45 + rnd.random() * 0.1, 13.35 + rnd.random() * 0.15
        size = rnd.choice((20.0, 100.0, 400.0, 2000.0, 9000.0))
        if i % 2:
            zones.append(circle(f"z{i}", lat, lon, size / 2))
        else:
            n = rnd.randint(3, 20)
            angles = sorted(rnd.uniform(0, 2 * math.pi) for _ in range(n))
            pts = [(lat + size / 2 * rnd.uniform(0.3, 1) * math.sin(a) * M,
                    lon + size / 2 * rnd.uniform(0.3, 1) * math.cos(a) * M / math.cos(math.radians(lat)))
                   for a in angles]  # fmt: skip
            zones.append(
                Zone.from_doc({"_id": f"z{i}", "name": "p", "polygon": [{"lat": a, "lon": b} for a, b in pts]})
            )
    index = ZoneIndex(zones)
    for _ in range(20_000):
        lat, lon = 52.44 + rnd.random() * 0.12, 13.34 + rnd.random() * 0.17
        got = sorted(z.zone_id for z in index.containing(lat, lon))
        assert got == sorted(z.zone_id for z in zones if z.contains(lat, lon)), (lat, lon)
    # On and right at edges, where cells are boundary cells.
    for z in zones[:100]:
        for lat, lon in z.outline()[:8]:
            got = {x.zone_id for x in index.containing(lat, lon)}
            assert got == {x.zone_id for x in zones if x.contains(lat, lon)}


def test_haversine_known_distance() -> None:
    # Berlin TV tower to Brandenburg Gate is about 2.2 km.
    assert 2100 < haversine_m(52.5208, 13.4094, 52.5163, 13.3777) < 2300


def test_commits_never_pass_an_unacknowledged_record() -> None:
    """faust-streaming#606: Faust committed over one unacked record at the head of a partition."""
    from intervaltree import IntervalTree

    from streams.offsets import committable

    acked = [11, 12, 13]
    assert committable(acked, 10, IntervalTree()) is None  # 10 is still in flight (or was dropped)
    assert acked == [11, 12, 13]  # nothing consumed: committed later, once 10 is acked
    acked.append(10)
    assert committable(acked, 10, IntervalTree()) == 14
    assert acked == []
    acked = [5, 6, 8, 9]
    assert committable(acked, 5, IntervalTree()) == 7  # up to the first hole
    assert acked == [8, 9]
    assert committable(acked, 7, IntervalTree()) is None
    gaps = IntervalTree()
    gaps.addi(7, 8)  # 7 is missing from the log itself (compaction, a transaction marker)
    assert committable(acked, 7, gaps) == 10
    assert committable([0, 1], None, IntervalTree()) == 2  # nothing committed yet
    assert committable([1, 2], 0, IntervalTree()) is None  # offset 0 counts too (Faust tests it as falsy)


def test_stream_partitions_reach_agents_in_offset_order_around_a_rebalance() -> None:
    """A batch fetched before a rebalance, yielded after the seek to the committed offset."""
    from faust.types import TP

    from streams.reading import InOrder, Verdict

    raw, log = TP("raw", 0), TP("changelog", 0)
    state = InOrder(lambda topic: topic == "raw")
    state.assigned()
    assert state.check(raw, 150, None) == (Verdict.DROP, 150)  # not sought yet: the seek reads it again
    assert state.check(log, 7, None) == (Verdict.DELIVER, 7)  # changelogs pass untouched
    assert state.hold({raw, log}) == {raw}  # Faust resumes it before seeking: kept paused
    assert state.sought_to({raw: 100}) == {raw}  # sought: released
    # The stale batch starts past the committed offset: sought back, not taken for a gap.
    assert state.check(raw, 215, 100) == (Verdict.SEEK_BACK, 100)
    assert state.check(raw, 100, 100) == (Verdict.DELIVER, 100)
    assert state.check(raw, 100, 100) == (Verdict.DROP, 100)  # read again: once is enough
    assert state.check(raw, 101, 100) == (Verdict.DELIVER, 101)
    assert state.check(raw, 103, 101) == (Verdict.SEEK_BACK, 102)
    # What the log really lacks (a transaction marker at 102): its first record past it passes.
    assert state.check(raw, 103, 102) == (Verdict.DELIVER, 103)
    assert state.check(raw, 104, 103) == (Verdict.DELIVER, 104)
    state.moved(raw, 90)  # GapRepair re-reads from 90
    assert state.check(raw, 105, 104) == (Verdict.SEEK_BACK, 90)
    assert state.check(raw, 90, 90) == (Verdict.DELIVER, 90)
    state.assigned()  # a rebalance: nothing is read before the seek to the committed offset
    assert state.check(raw, 91, 90) == (Verdict.DROP, 91)
    assert state.sought_to({raw: None}) == set()  # nothing committed: whatever the log starts with
    assert state.check(raw, 0, None) == (Verdict.DELIVER, 0)


def test_records_faust_dropped_are_found_below_acked_offsets_and_at_a_quiet_head() -> None:
    from streams.app import undelivered

    # A hole: 10 never delivered, 11-12 acked.
    assert undelivered({"p": 10}, {"p": [11, 12]}, set(), {"p": 13}) == {"p": 10}
    assert undelivered({"p": 10}, {"p": [11, 12]}, {("p", 10)}, {"p": 13}) == {}  # 10 is being processed
    # A quiet partition's only record, dropped: nothing acked, nothing in flight, the log goes past it.
    assert undelivered({"p": 10}, {}, set(), {"p": 11}) == {"p": 10}
    assert undelivered({"p": 10}, {}, {("p", 10)}, {"p": 11}) == {}  # in flight
    assert undelivered({"p": 11}, {}, set(), {"p": 11}) == {}  # caught up
    assert undelivered({"p": 10}, {}, set(), {"p": None}) == {}  # end not known yet
    assert undelivered({"p": None}, {}, set(), {"p": 5}) == {}  # Faust's None for offset 0 / none committed


def test_replay_memory_round_trips_seq_sets() -> None:
    from streams.replay import produced_before, remember, seq_members, seq_set

    assert seq_members(seq_set([5, 3, 9, 4])) == {3, 4, 5, 9}
    assert seq_members(seq_set([])) == set()
    state: dict[str, object] = {}
    for off in range(100):
        state = remember(state, ("raw", 1, off), seq_set([off]))
    assert produced_before(state, ("raw", 1, 99)) == seq_set([99])
    assert produced_before(state, ("raw", 1, 10)) is None  # older than the kept window
    assert produced_before(state, ("raw", 2, 99)) is None  # another partition
    assert produced_before(state, ("clean", 1, 99)) is None  # another source topic
    # Below the committed offset nothing can replay: those entries go, other partitions' stay.
    state = remember(state, ("raw", 2, 5), seq_set([5]))
    state = remember(state, ("raw", 1, 100), seq_set([100]), committed=99)
    assert [r[1] for r in state["recent"]] == [99, 5, 100]  # type: ignore[index]


def test_travel_time_prices_each_cell_on_the_way_at_its_learned_speed() -> None:
    import h3

    from core.config import Settings
    from streams.geo import haversine_m
    from streams.speeds import SPEED_RES, travel_s

    s = Settings()
    a, b = (52.40, 13.20), (52.52, 13.40)  # ~19 km: suburb to the centre
    road = haversine_m(*a, *b) * s.road_factor
    assert abs(travel_s(*a, *b, {}, 8, s) - road / s.default_speed_mps) < 1e-6
    cells = h3.grid_path_cells(h3.latlng_to_cell(*a, SPEED_RES), h3.latlng_to_cell(*b, SPEED_RES))
    jam = {f"{c}:8": 2.0 for c in cells[len(cells) // 2 :]}  # the second half crawls at 2 m/s
    slow = travel_s(*a, *b, jam, 8, s)
    expected = road / len(cells) * (len(cells) // 2 / s.default_speed_mps + (len(cells) - len(cells) // 2) / 2.0)
    assert abs(slow - expected) < 1e-6
    assert travel_s(*a, *b, jam, 9, s) == travel_s(*a, *b, {}, 9, s)  # learned for another hour only


def test_record_ages_split_kafka_from_the_worker() -> None:
    """Age at batch start and at receipt: the create time (Faust gives seconds) against its monotonic receive stamp."""
    import time
    from types import SimpleNamespace

    from streams.batching import received_age, record_age

    now_wall, now_mono = time.time(), time.monotonic()
    msg = SimpleNamespace(timestamp=now_wall - 0.5, time_in=now_mono - 0.2)  # created 0.5 s ago, received 0.2 s ago
    event = SimpleNamespace(message=msg)
    assert 0.5 <= record_age(event) < 0.6  # type: ignore[arg-type]
    received = received_age(event)  # type: ignore[arg-type]
    assert received is not None and 0.29 < received < 0.35
    assert received_age(SimpleNamespace(message=SimpleNamespace(timestamp=now_wall, time_in=None))) is None  # type: ignore[arg-type]
    assert record_age(SimpleNamespace(message=SimpleNamespace(timestamp=None, time_in=None))) == 0.0  # type: ignore[arg-type]


def test_batch_speed_learning_matches_learning_ping_by_ping() -> None:
    from streams.speeds import learn, learn_batch, speed_key

    def one_by_one(pings: list[GpsPing]) -> dict[str, float]:
        speeds: dict[str, float] = {}
        for p in pings:
            if p.speed_mps is not None and p.speed_mps > 0.5:
                k = speed_key(p.lat, p.lon, 8)
                speeds[k] = learn(speeds.get(k), p.speed_mps, 0.2)
        return speeds

    inside = [ping(i, i, lat=52.5 + i * 1e-5).model_copy(update={"speed_mps": 5.0 + i % 3}) for i in range(50)]
    inside[7] = inside[7].model_copy(update={"speed_mps": 0.1})  # parked: ignored
    across = [ping(i, i * 20, lat=52.40 + i * 0.004).model_copy(update={"speed_mps": 10.0 + i}) for i in range(50)]
    for pings in (inside, across):
        speeds: dict[str, float] = {}
        dirty: set[str] = set()
        learn_batch(pings, 8, speeds, dirty, 0.2)
        assert speeds == one_by_one(pings) and dirty == set(speeds)
    assert len(one_by_one(inside)) == 1 and len(one_by_one(across)) > 3  # each case is the one it claims to be


async def test_a_refused_commit_leaves_the_committed_offsets_as_they_were(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Faust takes offsets for committed even when Kafka refused them; replay memories prune below them."""
    from types import SimpleNamespace

    from streams import offsets

    answer = {"done": False}

    async def faust_commit(self, committed, start_new_transaction=True):  # type: ignore[no-untyped-def]
        self._committed_offset.update(committed)  # as Faust does, whatever the broker said
        return answer["done"]

    monkeypatch.setattr(offsets, "_commit_offsets", faust_commit)
    consumer = SimpleNamespace(_committed_offset={"raw-0": 10})
    assert await offsets._commit_offsets_or_keep(consumer, {"raw-0": 15, "raw-1": 3}) is False
    assert consumer._committed_offset == {"raw-0": 10}  # raw-1 had none: it has none again
    answer["done"] = True
    assert await offsets._commit_offsets_or_keep(consumer, {"raw-0": 15}) is True
    assert consumer._committed_offset == {"raw-0": 15}


async def test_a_revocation_commits_what_was_acknowledged_before_faust_forgets_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from streams import offsets

    seen: list[tuple[str, list[int]]] = []

    class Consumer:
        acked = [7, 8, 9]

        async def commit(self) -> None:
            seen.append(("commit", list(self.acked)))

    async def faust_revoke(self, revoked):  # type: ignore[no-untyped-def]
        seen.append(("revoke", list(self.acked)))
        self.acked.clear()  # Faust drops the revoked partitions' acknowledged offsets first

    monkeypatch.setattr(offsets, "_on_partitions_revoked", faust_revoke)
    await offsets._commit_then_revoke(Consumer(), set())
    assert seen == [("commit", [7, 8, 9]), ("revoke", [7, 8, 9])]


def test_accepted_seq_window_is_exact_within_its_span_and_bounded() -> None:
    from streams.replay import seen_before, window_add, window_has

    w: list[object] = []
    for first in range(0, 100, 4):
        w = window_add(w, [s for s in range(first, first + 4) if s % 10 != 7])  # every seq ending in 7 refused
    assert [s for s in range(-5, 105) if window_has(w, s)] == [s for s in range(100) if s % 10 != 7]
    # A window spans the last `span` seqs, and a seq jump far ahead starts it over.
    w = window_add(w, [10_000], span=50)
    assert window_has(w, 10_000) and not window_has(w, 99) and len(w[2]) <= 50  # type: ignore[arg-type]
    # Many refused seqs: it keeps the newest `max_missing`, forgetting the older accepted ones.
    w = []
    for s in range(0, 1000, 2):
        w = window_add(w, [s], max_missing=10)
    assert len(w[2]) == 10 and window_has(w, 998) and not window_has(w, 997) and not window_has(w, 100)  # type: ignore[arg-type]
    assert seen_before({"hw": {"raw:1": 7}}, ("raw", 1, 7)) and not seen_before({"hw": {"raw:1": 7}}, ("raw", 1, 8))
    assert not seen_before({"hw": {"raw:1": 7}}, ("raw", 2, 0)) and not seen_before(None, ("raw", 1, 0))


M = 1 / 111_195  # a metre of latitude, degrees


def test_a_fix_whose_accuracy_straddles_the_edge_neither_enters_nor_exits() -> None:
    index = ZoneIndex([circle("gate", 52.5, 13.4, 100)])
    inside: dict[str, dict[str, object]] = {}
    # 95 m from the centre (5 m inside) at 20 m accuracy: not surely in, so no enter.
    assert fence_changes(inside, ping(1, 0, lat=52.5 + 95 * M, acc=20.0), index, 300) == []
    assert [c.kind for c in fence_changes(inside, ping(2, 5, lat=52.5 + 60 * M, acc=20.0), index, 300)] == ["enter"]
    # Jitter across the edge at the gate: 105 m (5 m out) at 20 m, then 97 m: still inside, no flapping.
    for seq, metres in ((3, 105), (4, 97), (5, 108), (6, 102)):
        assert fence_changes(inside, ping(seq, seq * 5, lat=52.5 + metres * M, acc=20.0), index, 300) == []
    assert "gate" in inside
    # Surely out (130 m at 20 m), it exits; without an accuracy, the edge alone decides.
    assert [c.kind for c in fence_changes(inside, ping(7, 40, lat=52.5 + 130 * M, acc=20.0), index, 300)] == ["exit"]
    assert [c.kind for c in fence_changes(inside, ping(8, 45, lat=52.5 + 99 * M, acc=None), index, 300)] == ["enter"]
    # The accuracy counted is capped (FLEETSTREAM_FENCE_ACCURACY_CAP_M): a 90 m fix 60 m out does exit.
    assert [c.kind for c in fence_changes(inside, ping(9, 50, lat=52.5 + 160 * M, acc=90.0), index, 300,
                                          accuracy_cap_m=50)] == ["exit"]  # fmt: skip


def test_a_polygon_edge_distance_is_in_metres() -> None:
    zone = square("sq", 52.5, 13.4, 0.001)  # ~111 m north-south, ~68 m east-west half widths
    east_edge = 13.4 + 0.001
    metre_lon = M / math.cos(math.radians(52.5))
    assert zone.boundary_m(52.5, east_edge - 10 * metre_lon) == pytest.approx(10, rel=0.02)
    assert zone.boundary_m(52.5, east_edge + 25 * metre_lon) == pytest.approx(25, rel=0.02)
    assert zone.boundary_m(52.5 + 0.001 + 40 * M, 13.4) == pytest.approx(40, rel=0.02)


def cross_zone(zid: str, shape: Zone) -> Zone:
    shape.detect = frozenset({"enter", "exit", "cross"})
    return shape


def test_sparse_fixes_that_pass_through_a_zone_report_cross() -> None:
    small = cross_zone("kiosk", circle("kiosk", 52.5, 13.4, 30))
    plaza = cross_zone("plaza", square("plaza", 52.52, 13.4, 0.0005))
    quiet = circle("quiet", 52.51, 13.4, 30)  # detects no cross
    index = ZoneIndex([small, plaza, quiet])
    inside: dict[str, dict[str, object]] = {}
    # A fix every 60 s, 1.2 km apart, straight north over the kiosk, the quiet zone and the plaza.
    fixes = [ping(i, i * 60, lat=52.4925 + i * 0.005) for i in range(8)]  # none in a zone
    kinds = []
    prev = None
    for p in fixes:
        kinds += [(c.kind, c.zone_id, p.seq) for c in fence_changes(inside, p, index, 300, prev)]
        prev = (p.lat, p.lon)
    assert kinds == [("cross", "kiosk", 2), ("cross", "plaza", 6)]
    # A segment that passes beside a zone is no cross; one that ends inside is an enter, not a cross.
    assert not small.cut_by((52.49, 13.401), (52.51, 13.401))  # ~68 m east of the centre, radius 30
    enter = fence_changes({}, ping(9, 600, lat=52.5), index, 300, previous=(52.49, 13.4))
    assert [(c.kind, c.zone_id) for c in enter] == [("enter", "kiosk")]


def test_a_zone_reports_only_what_it_detects() -> None:
    exits_only = circle("out", 52.5, 13.4, 200)
    exits_only.detect = frozenset({"exit"})
    index = ZoneIndex([exits_only])
    inside: dict[str, dict[str, object]] = {}
    assert fence_changes(inside, ping(1, 0), index, 300) == []  # entered: state, no event
    assert "out" in inside
    assert [c.kind for c in fence_changes(inside, ping(2, 5, lat=52.51), index, 300)] == ["exit"]


def test_an_index_changed_zone_by_zone_answers_as_one_built_from_scratch() -> None:
    rnd = random.Random(3)

    def zone(i: int) -> Zone:
        lat, lon = 52.45 + rnd.random() * 0.1, 13.35 + rnd.random() * 0.1
        return circle(f"z{i}", lat, lon, rnd.uniform(50, 600)) if i % 2 else square(f"z{i}", lat, lon, 0.003)

    index = ZoneIndex()
    current: dict[str, Zone] = {}
    for i in range(300):
        z = zone(i)
        index.put(z)
        current[z.zone_id] = z
    for i in rnd.sample(range(300), 100):  # replaced: moved elsewhere
        z = zone(i)
        index.put(z)
        current[z.zone_id] = z
    for i in rnd.sample(range(300), 80):
        index.remove(f"z{i}")
        current.pop(f"z{i}", None)
    index.remove("never-there")
    fresh = ZoneIndex(current.values())
    assert index.zones.keys() == fresh.zones.keys()
    for _ in range(3000):
        lat, lon = 52.44 + rnd.random() * 0.12, 13.34 + rnd.random() * 0.12
        got = sorted(z.zone_id for z in index.containing(lat, lon))
        assert got == sorted(z.zone_id for z in fresh.containing(lat, lon))
    assert all(a or b for a, b in index.cells.values())  # no cell left holding nothing
