"""Harsh braking: a driver whose speed drops faster than a limit between two fixes.

Written only against the public SDK (``streams.sdk``) and the schemas. A braking event
goes to the agent's topic (``agents.harsh_braking``) and to the sockets of the driver and
of the dispatchers; each driver's events per 10-minute window are counted in a tumbling
window and reported when the window closes (``kind: "window"``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas import TelemetryBatch, deterministic_event_id
from schemas.contracts import STAFF, driver_audience
from streams.sdk import TELEMETRY, Agent, Context, Tumbling

#: Deceleration that counts as harsh, m/s² (about 0.4 g).
LIMIT_MPS2 = 4.0
#: Fixes further apart than this say nothing about braking.
MAX_GAP_S = 5.0
WINDOW = Tumbling(600)


class HarshBraking(BaseModel):
    event_id: uuid.UUID
    type: Literal["agent.harsh_braking"] = "agent.harsh_braking"
    kind: Literal["event", "window"] = "event"
    driver_id: str
    at: datetime
    lat: float | None = None
    lon: float | None = None
    decel_mps2: float = Field(0.0, ge=0)
    from_mps: float | None = None
    to_mps: float | None = None
    count: int = 1  # braking events in the window (kind "window")


agent: Agent[TelemetryBatch, HarshBraking] = Agent(
    "harsh_braking",
    TELEMETRY,
    HarshBraking,
    description="harsh braking per driver, and counts per 10-minute window",
    audiences=lambda e: [driver_audience(e.driver_id), STAFF],
)


@agent.handle
def on_batch(batch: TelemetryBatch, ctx: Context[HarshBraking]) -> None:
    last = ctx.state.get("last")  # [epoch s, speed m/s] of the driver's previous fix with a speed
    counts = ctx.window("brakes", WINDOW, reduce=lambda acc, n: acc + n, initial=0)
    for p in batch.pings:
        if p.speed_mps is None:
            continue
        t = p.ts.timestamp()
        braked = 0
        if last is not None and 0 < t - last[0] <= MAX_GAP_S:
            decel = (last[1] - p.speed_mps) / (t - last[0])
            if decel >= LIMIT_MPS2:
                braked = 1
                ctx.count("harsh_braking")
                ctx.emit(HarshBraking(
                    event_id=deterministic_event_id("harsh_braking", p.driver_id, p.seq),
                    driver_id=p.driver_id, at=p.ts, lat=p.lat, lon=p.lon, decel_mps2=round(decel, 2),
                    from_mps=last[1], to_mps=p.speed_mps,
                ))  # fmt: skip
        for w in counts.add(p.ts, braked):
            if w.value:
                ctx.emit(HarshBraking(
                    event_id=deterministic_event_id("harsh_braking_window", p.driver_id, w.start.isoformat()),
                    kind="window", driver_id=p.driver_id, at=w.end, count=int(w.value),
                ))  # fmt: skip
        last = [t, p.speed_mps]
    ctx.state["last"] = last
