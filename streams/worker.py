"""The composition root of a worker: the app, and what runs on it, in order.

The data path reads here, as a list. A device record is cleaned first; the steps after
clean run concurrently on each cleaned batch, started in the order listed (what a
customer waits for, ETA and location, sends its first request before the CPU-heavier
steps take the loop). The other agents read the topics those steps write. Nothing runs
at import: :func:`build` makes the app from settings and installs the chosen names.

Agents of installed packages (``streams.sdk``, entry-point group ``fleetstream.agents``)
come after these. ``fleetstream worker --agents`` chooses among all; a built-in name may install
a telemetry step, agents of its own, or both (``driver_state``: the step and the offline
timer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from core.config import Settings
from streams import (
    bookings,
    clean,
    driver_state,
    eta,
    geofence,
    matching,
    metrics,
    offsets,
    pipeline,
    publish,
    reading,
    resources,
    sdk,
    store,
)
from streams.agents import trips
from streams.app import GapRepair, Runtime, create_app, stop_on_agent_error
from streams.sdk import run as sdk_run

log = logging.getLogger(__name__)

Install = Callable[[Runtime], None]
StepOf = Callable[[Runtime], pipeline.StepFactory]


@dataclass(frozen=True)
class Agent:
    """A name ``--agents`` accepts: a telemetry step it adds, and agents it installs."""

    step: StepOf | None = None
    install: Install | None = None


#: The telemetry agent's cleaner: ``telemetry.raw`` → ``telemetry.clean``, rejects to ``telemetry.dlq``.
CLEANER = "clean"

#: Every agent a worker can run, in order. Steps run in this order on each cleaned batch.
AGENTS: dict[str, Agent] = {
    CLEANER: Agent(),  # the cleaner (below); the steps read its output in process
    "eta": Agent(step=eta.step),  # live ETAs → customers' sockets, eta.updates; speeds learned
    "publish": Agent(step=publish.step, install=publish.install),  # locations; geofence/status/booking fan-out
    "driver_state": Agent(step=driver_state.step, install=driver_state.install),  # Redis state; offline timer
    "geofence": Agent(step=geofence.step),  # enter/exit/dwell → geofence.events
    "store": Agent(install=store.install),  # telemetry.clean, geofence.events, bookings.events → MongoDB
    "bookings": Agent(install=bookings.install),  # bookings.commands → bookings.events, Redis mirror
    "matching": Agent(install=matching.install),  # pending bookings → offers; offer timeouts
}


#: Built-in agents written on the SDK, in order, from the settings; they run after ``AGENTS``
#: (they read what those write) and before installed packages' agents.
SDK_AGENTS: dict[str, Callable[[Settings], sdk.Agent[Any, Any]]] = {
    "trips": lambda s: trips.agent(trips.TripRules.of(s)),  # trips and stops → agents.trips (stored by "store")
}


def installed() -> dict[str, sdk.Agent[Any, Any]]:
    """Agents of installed packages (entry-point group ``fleetstream.agents``), by entry-point name."""
    found: dict[str, sdk.Agent[Any, Any]] = {}
    for ep in entry_points(group=sdk.ENTRY_POINT_GROUP):
        agent = ep.load()
        if not isinstance(agent, sdk.Agent):
            raise TypeError(f"entry point {ep.name} ({ep.value}) is not a streams.sdk.Agent")
        if ep.name in AGENTS or ep.name in SDK_AGENTS or ep.name in found:
            raise ValueError(f"installed agent {ep.name} ({ep.value}) takes a name already in use")
        found[ep.name] = agent
    return found


def sdk_agents(settings: Settings) -> dict[str, sdk.Agent[Any, Any]]:
    """The built-in SDK agents, then those of installed packages: the order they run in."""
    return {**{n: make(settings) for n, make in SDK_AGENTS.items()}, **installed()}


def build(settings: Settings, names: list[str] | None = None) -> Runtime:
    """The worker's app with the chosen agents (all, built-in and installed, when None) installed on it."""
    extra = sdk_agents(settings)
    chosen = names or [*AGENTS, *extra]
    unknown = [n for n in chosen if n not in AGENTS and n not in extra]
    if unknown:
        raise ValueError(f"unknown agents {unknown}; known: {sorted([*AGENTS, *extra])}")
    resources.configure(settings)  # the clients connect as this worker's settings say
    rt = Runtime(create_app(settings), settings)
    metrics.install(rt)
    offsets.install()  # never commit past an unacknowledged record
    reading.install()  # stream partitions reach the agents in offset order, around rebalances too
    steps = [(n, step(rt)) for n, a in AGENTS.items() if n in chosen and (step := a.step) is not None]
    pipeline.build(rt, clean.cleaner(rt) if CLEANER in chosen else None, steps)
    for n, a in AGENTS.items():
        if n in chosen and a.install is not None:
            a.install(rt)
    for n, agent in extra.items():  # after the built-in ones: they read what those write
        if n in chosen:
            sdk_run.install(agent, rt)
    for agent in rt.app.agents.values():
        agent._on_error = stop_on_agent_error(rt)  # Faust's hook: every agent, ours or yours, has it
    rt.app.timer(interval=settings.gap_check_s, name="streams.app.repair_gaps")(GapRepair(rt.app).check)
    log.info("worker %s: agents %s", settings.app_id, ", ".join(chosen))
    return rt
