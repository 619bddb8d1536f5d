"""A short end-to-end run for the README's first command: telemetry in, status events out."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from rich.console import Console

from fleetstream.config import Settings
from fleetstream.kafka import make_consumer, make_producer
from schemas import DriverStatusEvent, GpsPing, TelemetryBatch, decode, encode


def simulated_batches(drivers: list[str], batches: int, per_batch: int = 10) -> list[TelemetryBatch]:
    rnd = random.Random(7)
    start = datetime.now(UTC) - timedelta(seconds=batches * per_batch)
    out = []
    for d in drivers:
        lat, lon = 52.52 + rnd.uniform(-0.05, 0.05), 13.40 + rnd.uniform(-0.05, 0.05)
        seq = 0
        for _ in range(batches):
            pings = []
            for _ in range(per_batch):
                lat += rnd.uniform(-1e-4, 1e-4)
                lon += rnd.uniform(-1e-4, 1e-4)
                pings.append(
                    GpsPing(
                        driver_id=d,
                        seq=seq,
                        ts=start + timedelta(seconds=seq),
                        lat=lat,
                        lon=lon,
                        accuracy_m=5.0,
                        speed_mps=8.0,
                        heading_deg=90.0,
                    )
                )
                seq += 1
            out.append(TelemetryBatch(driver_id=d, pings=pings))
    return out


async def run_smoke(settings: Settings, drivers: int, batches: int, timeout: float, console: Console) -> bool:
    run_id = uuid.uuid4().hex[:8]
    ids = [f"smoke-{run_id}-{i}" for i in range(drivers)]
    consumer = make_consumer(settings, "drivers.status", auto_offset_reset="latest")
    await consumer.start()
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)
    producer = make_producer(settings)
    await producer.start()
    t0 = time.monotonic()
    try:
        sent = simulated_batches(ids, batches)
        await asyncio.gather(*[producer.send("telemetry.raw", encode(b), key=b.driver_id.encode()) for b in sent])
        await producer.flush()
        pings = sum(len(b.pings) for b in sent)
        console.print(f"produced {len(sent)} batches / {pings} pings for {drivers} drivers to telemetry.raw")
        online: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(online) < drivers and time.monotonic() < deadline:
            records = await consumer.getmany(timeout_ms=500)
            for msgs in records.values():
                for m in msgs:
                    ev = decode(m.value)
                    if isinstance(ev, DriverStatusEvent) and ev.driver_id in ids:
                        online.add(ev.driver_id)
        took = time.monotonic() - t0
        console.print(
            f"presence agent reported {len(online)}/{drivers} drivers online on drivers.status in {took:.1f}s"
        )
        return len(online) == drivers
    finally:
        await producer.stop()
        await consumer.stop()
