"""The stream-agent SDK: write an agent in a package of your own; the worker runs it.

::

    from streams.sdk import TELEMETRY, Agent, Context

    agent = Agent("harsh_braking", TELEMETRY, HarshBraking)

    @agent.handle
    def on_batch(batch: TelemetryBatch, ctx: Context[HarshBraking]) -> None:
        ...  # read and change ctx.state, ctx.emit(event)

Expose it under the entry-point group ``fleetstream.agents`` and ``fleetstream worker``
runs it beside the built-in agents (``--agents`` takes its name too). The handler is
plain logic, so ``streams.sdk.testing.Harness`` runs it in memory, and
``fleetstream agent backtest`` runs it over retained history. ``docs/agents.md`` is the guide.
"""

from streams.sdk.agent import (
    BOOKINGS,
    DRIVER_STATUS_EVENTS,
    GEOFENCES,
    TELEMETRY,
    Agent,
    Context,
    Outcome,
    Source,
    TimerContext,
    apply,
)
from streams.sdk.windows import Closed, Hopping, Tumbling, WindowState

#: The entry-point group installed agents are discovered in.
ENTRY_POINT_GROUP = "fleetstream.agents"

__all__ = [
    "BOOKINGS",
    "DRIVER_STATUS_EVENTS",
    "ENTRY_POINT_GROUP",
    "GEOFENCES",
    "TELEMETRY",
    "Agent",
    "Closed",
    "Context",
    "Hopping",
    "Outcome",
    "Source",
    "TimerContext",
    "Tumbling",
    "WindowState",
    "apply",
]
