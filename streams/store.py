"""Feeds the MongoDB sinks: ping history, latest driver state, geofence events.

Each agent takes a batch of records, writes it through an idempotent sink and only
then moves on, so offsets are committed after the write (at-least-once, no loss) and
a replay after SIGKILL inserts nothing twice.
"""

from __future__ import annotations

from typing import Any

from schemas import GeofenceEvent, TelemetryBatch
from sinks.mongo import DriverStateSink, InsertOnceSink, ensure_indexes
from streams import resources
from streams.app import app, topic
from streams.metrics import RECORDS

clean_topic = topic("telemetry.clean")
geofence_topic = topic("geofence.events")


def ping_docs(batch: TelemetryBatch) -> list[dict[str, Any]]:
    return [
        {
            "_id": f"{p.driver_id}:{p.seq}",
            "driver_id": p.driver_id,
            "seq": p.seq,
            "ts": p.ts,
            "lat": p.lat,
            "lon": p.lon,
            "accuracy_m": p.accuracy_m,
            "speed_mps": p.speed_mps,
            "heading_deg": p.heading_deg,
        }
        for p in batch.pings
    ]


@app.agent(clean_topic)
async def store_pings(stream):  # type: ignore[no-untyped-def]
    db = resources.db()
    await ensure_indexes(db)
    pings, drivers = InsertOnceSink(db, "pings"), DriverStateSink(db)
    async for batches in stream.take(500, within=0.2):
        RECORDS.labels("store_pings").inc(len(batches))
        docs = [d for b in batches if isinstance(b, TelemetryBatch) for d in ping_docs(b)]
        await pings.write(docs)
        latest = [{**d, "_id": d["driver_id"]} for d in docs]
        await drivers.write(latest)


@app.agent(geofence_topic)
async def store_geofence_events(stream):  # type: ignore[no-untyped-def]
    sink = InsertOnceSink(resources.db(), "geofence_events")
    async for events in stream.take(500, within=0.2):
        RECORDS.labels("store_geofence_events").inc(len(events))
        docs = [
            {**e.model_dump(mode="python", exclude={"event_id"}), "_id": str(e.event_id)}
            for e in events
            if isinstance(e, GeofenceEvent)
        ]
        await sink.write(docs)
