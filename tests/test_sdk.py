"""The SDK's own guarantees, in memory: windows, replay safety, dead letters, timers, discovery."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from schemas import TelemetryBatch, deterministic_event_id
from streams.sdk import TELEMETRY, Agent, Context, Hopping, TimerContext, Tumbling
from streams.sdk.testing import Harness, track
from streams.sdk.windows import WindowState

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


class Seen(BaseModel):
    event_id: uuid.UUID
    type: str = "agent.seen"
    driver_id: str
    pings: int


def counting_agent() -> Agent[TelemetryBatch, Seen]:
    agent: Agent[TelemetryBatch, Seen] = Agent("seen", TELEMETRY, Seen)

    @agent.handle
    def on(batch: TelemetryBatch, ctx: Context[Seen]) -> None:
        if batch.pings[0].lat > 80:
            raise ValueError("the author's bug on odd data")
        ctx.state["n"] = ctx.state.get("n", 0) + len(batch.pings)
        ctx.count("pings", len(batch.pings))
        ctx.emit(Seen(event_id=deterministic_event_id("seen", batch.driver_id, batch.pings[-1].seq),
                      driver_id=batch.driver_id, pings=ctx.state["n"]))  # fmt: skip

    @agent.every(30)
    def report(now: datetime, ctx: TimerContext[Seen]) -> None:
        for key, state in ctx.states():
            ctx.emit(Seen(event_id=deterministic_event_id("report", key, now.isoformat()), driver_id=key,
                          pings=state["n"]))  # fmt: skip

    return agent


def test_state_is_per_key_and_counts_are_labelled() -> None:
    h = Harness(counting_agent())
    out = h.send(*track("a", [(52.5, 13.4)] * 3, T0, per_batch=2), *track("b", [(52.5, 13.4)], T0))
    assert [(e.driver_id, e.pings) for e in out] == [("a", 2), ("a", 3), ("b", 1)]
    assert h.counts == {"pings": 4}


def test_a_record_the_handler_raises_on_is_set_aside_and_the_rest_goes_on() -> None:
    h = Harness(counting_agent())
    odd = track("x", [(85.0, 13.4)], T0)
    out = h.send(*track("a", [(52.5, 13.4)], T0), *odd, *track("a", [(52.5, 13.4)], T0, seq0=1))
    assert [e.pings for e in out] == [1, 2]
    assert len(h.dead_letters) == 1 and isinstance(h.dead_letters[0][1], ValueError)
    assert h.state("x") == {}  # nothing of the failed record was kept


def test_a_replay_after_the_state_moved_on_emits_the_old_events_not_new_ones() -> None:
    h = Harness(counting_agent())
    first = h.send(*track("a", [(52.5, 13.4)], T0))
    h.send(*track("a", [(52.5, 13.4)], T0, seq0=1))
    assert h.replay(0) == first  # record 0 again: pings=1 as before, though the state holds 2
    assert h.state("a")["n"] == 2


def test_a_replay_from_beyond_the_memory_changes_nothing_and_emits_nothing_new() -> None:
    from streams.replay import KEEP

    h = Harness(counting_agent())
    n = KEEP + 10
    h.send(*track("a", [(52.5, 13.4)] * n, T0))
    emitted = len(h.emitted)
    assert h.replay(0) == []  # record 0 is no longer remembered: it must not count again
    assert h.state("a")["n"] == n and len(h.emitted) == emitted
    assert h.replay(n - 1) == h.emitted[-1:]  # a recent one still re-emits what it emitted


def test_timers_see_each_key_state() -> None:
    h = Harness(counting_agent())
    h.send(*track("a", [(52.5, 13.4)] * 2, T0, per_batch=2), *track("b", [(52.5, 13.4)], T0))
    assert sorted((e.driver_id, e.pings) for e in h.tick(T0)) == [("a", 2), ("b", 1)]


def test_tumbling_windows_close_on_event_time_and_drop_late_values() -> None:
    w = WindowState({}, Tumbling(60), lambda a, v: a + v, 0)
    assert w.add(T0, 1) == [] and w.add(T0 + timedelta(seconds=59), 2) == []
    closed = w.add(T0 + timedelta(seconds=61), 5)
    assert [(c.start, c.end, c.value) for c in closed] == [(T0, T0 + timedelta(seconds=60), 3)]
    assert w.add(T0 + timedelta(seconds=10), 9) == [] and w.late == 1  # its window had closed


def test_hopping_windows_count_a_value_in_each_window_it_falls_in() -> None:
    w = WindowState({}, Hopping(60, 30), lambda a, v: a + v, 0)
    w.add(T0 + timedelta(seconds=40), 1)  # in [0, 60) and [30, 90)
    closed = w.add(T0 + timedelta(seconds=120), 0)
    assert [(c.start - T0, c.value) for c in closed] == [(timedelta(0), 1), (timedelta(seconds=30), 1)]


def test_agents_are_checked_when_declared() -> None:
    with pytest.raises(ValueError, match="agent name"):
        Agent("no.dots", TELEMETRY, Seen)

    class NoId(BaseModel):
        driver_id: str

    with pytest.raises(ValueError, match="event_id"):
        Agent("ok", TELEMETRY, NoId)
    with pytest.raises(ValueError, match="step_s"):
        Hopping(60, 90)


def test_the_installed_example_agent_is_discovered_by_its_entry_point() -> None:
    from streams.worker import installed

    found = installed()
    assert "harsh_braking" in found, "examples/harsh_braking is installed by `make install`"
    assert found["harsh_braking"].topic.name == "agents.harsh_braking"
