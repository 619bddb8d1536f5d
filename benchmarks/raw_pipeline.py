"""The clean + driver-state + MongoDB work of the Faust agents as one plain aiokafka loop.

Baseline for ``benchmarks/telemetry.py``: same rules (``streams.rules``), same Redis
script, same idempotent sinks, offsets committed after the writes; no Faust, no
``telemetry.clean`` hop and no changelog topics. Not a product path.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import redis.asyncio as aioredis
from motor.motor_asyncio import AsyncIOMotorClient

from core.config import get_settings
from core.kafka import make_consumer
from schemas import TelemetryBatch, decode
from schemas.contracts import TELEMETRY_RAW
from sinks.mongo import DriverStateSink, InsertOnceSink, ensure_indexes, track_bucket
from streams.driver_state import UPDATE_POSITION, _fmt, position_keys
from streams.rules import CleanLimits, clean_pings
from streams.store import latest_state
from streams.throttle import Throttle


async def main() -> None:
    s = get_settings()
    consumer = make_consumer(s, s.topic(TELEMETRY_RAW.name), group_id=s.app_id, max_poll_records=2000)
    await consumer.start()
    r = aioredis.from_url(s.redis_dsn, decode_responses=True)
    update = r.register_script(UPDATE_POSITION)
    db = AsyncIOMotorClient(s.mongo_dsn, tz_aware=True)[s.mongo_db]
    await ensure_indexes(db)
    tracks_sink, drivers_sink = InsertOnceSink(db, "tracks"), DriverStateSink(db)
    limits = CleanLimits(s.max_accuracy_m, s.max_speed_mps)
    state: dict[str, dict[str, object] | None] = {}
    progress = Path(os.environ.get("RAW_PROGRESS_FILE", "/dev/null"))
    stored = 0
    persist = s.driver_persist_interval_s  # as the store agent does
    throttle = Throttle(persist if persist is not None else 0.0)
    try:
        while True:
            records = await consumer.getmany(timeout_ms=200, max_records=2000)
            batches: list[TelemetryBatch] = []
            for msgs in records.values():
                for m in msgs:
                    try:
                        b = decode(m.value)
                    except ValueError:
                        continue
                    if isinstance(b, TelemetryBatch):
                        good, _, state[b.driver_id] = clean_pings(state.get(b.driver_id), b.pings, limits)
                        if good:
                            batches.append(b.model_copy(update={"pings": good}))
            if not batches:
                continue
            now = repr(time.time())
            pipe = r.pipeline(transaction=False)
            for b in batches:
                p = b.pings[-1]
                await update(keys=position_keys(b.driver_id),
                             args=[b.driver_id, _fmt(p.lat), _fmt(p.lon), _fmt(p.speed_mps), _fmt(p.heading_deg),
                                   p.ts.isoformat(), p.seq, now], client=pipe)  # fmt: skip
            await pipe.execute()
            await tracks_sink.write([track_bucket(b.driver_id, b.pings) for b in batches])
            now_m = time.monotonic()
            newest = {b.driver_id: b for b in batches}
            if persist is not None:
                await drivers_sink.write([latest_state(b) for d, b in newest.items() if throttle.allow(d, now_m)])
            await consumer.commit()
            stored += sum(len(b.pings) for b in batches)
            await asyncio.to_thread(progress.write_text, str(stored))
    finally:
        await consumer.stop()
        await r.aclose()


if __name__ == "__main__":
    asyncio.run(main())
