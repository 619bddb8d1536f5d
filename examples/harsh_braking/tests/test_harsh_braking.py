"""The agent's logic in memory (``streams.sdk.testing``): no servers, milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from harsh_braking import LIMIT_MPS2, agent

from streams.sdk.testing import Harness, track

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_a_hard_stop_is_one_event_and_gentle_slowing_is_none() -> None:
    h = Harness(agent)
    gentle = [(52.5, 13.4, 15.0 - i) for i in range(10)]  # 1 m/s² for 10 s
    hard = [(52.5, 13.41, 15.0), (52.5, 13.41, 15.0 - LIMIT_MPS2 - 1), (52.5, 13.41, 2.0)]
    assert h.send(*track("d1", gentle, START)) == []
    events = h.send(*track("d1", hard, START + timedelta(seconds=10), seq0=10))
    assert [e.kind for e in events] == ["event", "event"]  # 15 → 10 → 2: two harsh decelerations
    assert events[0].decel_mps2 == LIMIT_MPS2 + 1 and events[0].driver_id == "d1"


def test_a_gap_between_fixes_says_nothing_about_braking() -> None:
    h = Harness(agent)
    pings = track("d2", [(52.5, 13.4, 20.0), (52.5, 13.4, 0.0)], START, every_s=30)
    assert h.send(*pings) == []


def test_each_driver_has_its_own_state() -> None:
    h = Harness(agent)
    h.send(*track("a", [(52.5, 13.4, 20.0)], START))
    # b's first fix is slow: it must not be compared with a's last one.
    assert h.send(*track("b", [(52.5, 13.4, 1.0)], START + timedelta(seconds=1))) == []
    assert h.state("a")["last"][1] == 20.0


def test_braking_counts_per_window_are_reported_when_the_window_closes() -> None:
    h = Harness(agent)
    stops = [(52.5, 13.4, 20.0), (52.5, 13.4, 10.0), (52.5, 13.4, 20.0), (52.5, 13.4, 10.0)]
    h.send(*track("d3", stops, START))  # two harsh stops in the 08:00-08:10 window
    later = h.send(*track("d3", [(52.5, 13.4, 5.0)], START + timedelta(minutes=11), seq0=10))
    assert [(e.kind, e.count) for e in later] == [("window", 2)]


def test_a_replayed_record_emits_exactly_what_it_emitted() -> None:
    h = Harness(agent)
    h.send(*track("d4", [(52.5, 13.4, 20.0)], START))
    first = h.send(*track("d4", [(52.5, 13.4, 10.0)], START + timedelta(seconds=1), seq0=1))
    assert len(first) == 1
    assert h.replay(1) == first  # same events, same ids: consumers drop the copy
    assert h.state("d4")["last"][1] == 10.0  # and the state did not move twice
