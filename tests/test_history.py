"""History buckets held open across records (``streams.history``): pure logic, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import GpsPing
from schemas.track import bucket_pings, track_bucket
from streams.history import OpenBuckets, after

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def doc(driver: str, *seqs: int) -> dict[str, object]:
    pings = [GpsPing(driver_id=driver, seq=s, ts=T0 + timedelta(seconds=s), lat=52.5, lon=13.4) for s in seqs]
    return track_bucket(driver, pings)


def seqs(d: dict[str, object]) -> list[int]:
    return [p["seq"] for p in bucket_pings(d)]


def test_after_cuts_a_bucket_at_a_seq() -> None:
    d = doc("a", 3, 4, 5, 6)
    assert after(d, 2) is d
    assert after(d, 6) is None
    rest = after(d, 4)
    assert rest is not None
    assert seqs(rest) == [5, 6]
    assert (rest["_id"], rest["first_seq"], rest["last_seq"], rest["n"]) == ("a:5", 5, 6, 2)
    assert rest["t0"] == T0 + timedelta(seconds=5) and rest["t1"] == T0 + timedelta(seconds=6)


def test_pings_gather_per_driver_until_full_or_old() -> None:
    held = OpenBuckets(max_pings=4, max_age_s=10)
    assert held.add(doc("a", 1), None, "ra1", -1, now=0.0)
    assert held.add(doc("b", 1), None, "rb1", -1, now=1.0)
    assert held.add(doc("a", 2, 3), None, "ra2", -1, now=2.0)
    assert held.due(now=9.0) == []  # nothing full, nothing 10 s old
    assert held.add(doc("a", 4, 5), None, "ra3", -1, now=3.0)  # a is full: out at once
    out = held.due(now=3.0)
    assert [(b.driver_id, seqs(b.doc()), b.tokens) for b in out] == [("a", [1, 2, 3, 4, 5], ["ra1", "ra2", "ra3"])]
    assert held.add(doc("a", 6), None, "ra4", -1, now=4.0)
    out = held.due(now=11.5)  # b opened at 1 s: 10 s old; a's new bucket (4 s) is not
    assert [(b.driver_id, b.doc()["_id"], b.tokens) for b in out] == [("b", "b:1", ["rb1"])]
    assert [b.driver_id for b in held.due(now=14.0)] == ["a"]
    assert held.add(doc("a", 7), None, "ra5", -1, now=15.0)
    assert held.add(doc("b", 2), None, "rb2", -1, now=15.5)
    # A rebalance: every open bucket is written, however young, so their records can be acked.
    assert [b.driver_id for b in held.due(now=15.5, everything=True)] == ["a", "b"]
    assert held.due(now=99.0) == []


def test_replays_are_skipped_and_acknowledged_only_once_stored() -> None:
    held = OpenBuckets(max_pings=100, max_age_s=10)
    # Stored up to 5 already: a replayed record at or below it holds nothing new (acknowledge now) ...
    assert not held.add(doc("a", 4, 5), None, "old", 5, now=0.0)
    # ... one that straddles it keeps only what is new ...
    assert held.add(doc("a", 5, 6, 7), None, "r1", 5, now=0.0)
    # ... and a replay of pings that are held but not stored yet waits for their bucket.
    assert held.add(doc("a", 6, 7), None, "r1-again", 5, now=1.0)
    [b] = held.due(now=20.0)
    assert seqs(b.doc()) == [6, 7] and b.doc()["_id"] == "a:6"
    assert b.tokens == ["r1", "r1-again"]


def test_a_replay_of_a_bucket_just_filled_waits_for_it() -> None:
    held = OpenBuckets(max_pings=2, max_age_s=10)
    assert held.add(doc("a", 1, 2), None, "r1", -1, now=0.0)  # full: closing, not handed out yet
    assert held.add(doc("a", 1, 2), None, "r1-again", -1, now=0.0)
    [b] = held.due(now=0.0)
    assert b.tokens == ["r1", "r1-again"]
    assert not held.add(doc("a", 1, 2), None, "late", 2, now=1.0)  # stored by now


def test_due_costs_what_it_flushes() -> None:
    held = OpenBuckets(max_pings=1000, max_age_s=10)
    for i in range(10_000):
        held.add(doc(f"d{i}", 1), None, i, -1, now=float(i))
    assert [b.driver_id for b in held.due(now=12.0)] == ["d0", "d1", "d2"]
    assert len(held.open) == 9_997
