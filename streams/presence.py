"""Presence: notices a driver coming online from its telemetry.

The first ping after silence (or ever) emits a ``driver.status`` online event.
State lives in a changelog-backed table keyed like the topic (driver id), so a
restarted worker recovers it; event ids are derived from the triggering ping, so
reprocessing after a crash emits the same id and downstream consumers dedupe.
"""

from __future__ import annotations

from datetime import datetime

import faust

from fleetstream.config import get_settings
from schemas import DriverStatus, DriverStatusEvent, TelemetryBatch, deterministic_event_id
from streams.app import app, topic

raw_telemetry = topic("telemetry.raw")
driver_status = topic("drivers.status")

presence = app.Table(
    "driver-presence",
    default=None,
    schema=faust.Schema(key_serializer="raw", value_serializer="json"),
    partitions=get_settings().telemetry_partitions,
)


def came_online(previous: dict[str, object] | None, batch: TelemetryBatch, offline_after_s: float) -> bool:
    """Pure rule: online if never seen, or silent longer than the offline timeout."""
    if previous is None:
        return True
    last_seen = datetime.fromisoformat(str(previous["last_seen"]))
    return (batch.pings[0].ts - last_seen).total_seconds() > offline_after_s


@app.agent(raw_telemetry)
async def track_presence(batches):  # type: ignore[no-untyped-def]
    offline_after = get_settings().offline_after_s
    async for batch in batches:
        if not isinstance(batch, TelemetryBatch):
            continue
        key = batch.driver_id.encode()
        previous = presence.get(key)
        last = max(batch.pings, key=lambda p: p.ts)
        if came_online(previous, batch, offline_after):
            first = batch.pings[0]
            event = DriverStatusEvent(
                event_id=deterministic_event_id("presence", batch.driver_id, first.seq, first.ts.isoformat()),
                driver_id=batch.driver_id,
                status=DriverStatus.online,
                previous=DriverStatus.offline if previous else None,
                last_seen=last.ts,
                lat=last.lat,
                lon=last.lon,
            )
            await driver_status.send(key=key, value=event)
        if previous is None or str(previous["last_seen"]) < last.ts.isoformat():
            presence[key] = {"last_seen": last.ts.isoformat(), "last_seq": last.seq}
