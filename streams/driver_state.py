"""Driver state: last position, speed, heading, status and last-seen, per driver.

Authoritative copy in a Faust table (recovered from its changelog after a restart),
mirrored to Redis so the API and matching read it without Kafka:

- ``driver:{id}``           hash (lat, lon, speed_mps, heading_deg, ts, seq, status, seen)
- ``drivers:geo:available`` geo set of online drivers that are not busy
- ``drivers:last_seen``     sorted set, score = wall-clock time of the last processed ping

A step of the telemetry agent (``streams.pipeline``). Redis writes of a whole batch go
through one pipeline of a Lua script that keeps a busy driver out of the geo index.
The offline timer runs on every worker; each stale driver is claimed atomically by one
of them (a Lua ``ZREM``), which then emits the ``driver.status`` offline event.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from redis.asyncio.client import Pipeline

from fleetstream.clients import Lua, execute
from fleetstream.config import get_settings
from schemas import DriverStatus, DriverStatusEvent, TelemetryBatch, deterministic_event_id
from streams import pipeline, resources
from streams.app import app, table, topic
from streams.keys import GEO_KEY, SEEN_KEY, driver_key, reserve_key
from streams.metrics import DRIVERS_ONLINE, PINGS

status_topic = topic("drivers.status")


state_table = table(
    "driver-state",
    # Written from batches (stream.take), where there is no "current event" to take the
    # partition from; the key's partition is the same one the source record came from.
    use_partitioner=True,
)

# KEYS: driver hash, geo set, last-seen zset, reservation.  ARGV: id, lat, lon, speed, heading, ts, seq, now.
# Returns 1 when the driver was offline (or unknown) and is now online (busy if a booking holds it).
# Busy follows the reservation key: a driver whose reservation expired without a release is free again.
UPDATE_POSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
local came_online = 0
if (not status) or status == 'offline' then
  if redis.call('EXISTS', KEYS[4]) == 1 then status = 'busy' else status = 'online' end
  came_online = 1
elseif status == 'busy' and redis.call('EXISTS', KEYS[4]) == 0 then
  status = 'online'  -- busy means held by a booking; a hold that lapsed unreleased (a crash) must not strand it
end
redis.call('HSET', KEYS[1], 'lat', ARGV[2], 'lon', ARGV[3], 'speed_mps', ARGV[4], 'heading_deg', ARGV[5],
           'ts', ARGV[6], 'seq', ARGV[7], 'seen', ARGV[8], 'status', status)
if status == 'online' then redis.call('GEOADD', KEYS[2], ARGV[3], ARGV[2], ARGV[1]) end
redis.call('ZADD', KEYS[3], ARGV[8], ARGV[1])
return came_online
"""

# KEYS: last-seen zset, geo set.  ARGV: cutoff, limit, hash key prefix.
# Returns a flat list id, lat, lon, ts for each driver this caller claimed.
EXPIRE_OFFLINE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('ZREM', KEYS[2], id)
    local h = ARGV[3] .. id
    redis.call('HSET', h, 'status', 'offline')
    local v = redis.call('HMGET', h, 'lat', 'lon', 'ts')
    table.insert(out, id); table.insert(out, v[1] or ''); table.insert(out, v[2] or ''); table.insert(out, v[3] or '')
  end
end
return out
"""


def _fmt(v: float | None) -> str:
    return "" if v is None else repr(v)


async def make_step() -> pipeline.Step:
    r = resources.redis()
    update = Lua(UPDATE_POSITION)

    async def track_drivers(items: list[pipeline.Item]) -> None:
        now = repr(time.time())
        calls: list[tuple[list[str], list[object]]] = []
        touched: list[tuple[TelemetryBatch, dict[str, object]]] = []
        for item in items:
            batch = item.batch
            PINGS.labels("driver_state").inc(len(batch.pings))
            key = batch.driver_id.encode()
            prev = state_table.get(key)
            last = batch.pings[-1]
            if prev is not None and last.seq <= int(prev["seq"]):
                continue  # a replay of something already applied
            state = {
                "lat": last.lat, "lon": last.lon, "speed_mps": last.speed_mps, "heading_deg": last.heading_deg,
                "ts": last.ts.isoformat(), "seq": last.seq,
            }  # fmt: skip
            calls.append(([driver_key(batch.driver_id), GEO_KEY, SEEN_KEY, reserve_key(batch.driver_id)],
                          [batch.driver_id, _fmt(last.lat), _fmt(last.lon), _fmt(last.speed_mps),
                           _fmt(last.heading_deg), last.ts.isoformat(), last.seq, now]))  # fmt: skip
            touched.append((batch, state))
        if not touched:
            return

        def build(pipe: Pipeline) -> None:
            for keys, args in calls:
                update.queue(pipe, keys, args)

        results = await execute(r, build, [update])
        for batch, state in touched:  # only after Redis has it: a crash before this replays into Redis
            state_table[batch.driver_id.encode()] = state
        for (batch, state), came_online in zip(touched, results, strict=True):
            if came_online:
                await status_topic.send(
                    key=batch.driver_id.encode(),
                    value=DriverStatusEvent(
                        event_id=deterministic_event_id("online", batch.driver_id, state["seq"]),
                        driver_id=batch.driver_id,
                        status=DriverStatus.online,
                        previous=DriverStatus.offline,
                        last_seen=datetime.fromisoformat(str(state["ts"])),
                        lat=state["lat"],
                        lon=state["lon"],
                    ),
                )

    return track_drivers


pipeline.register_step("driver_state", make_step)


@app.timer(interval=get_settings().offline_check_s)
async def expire_silent_drivers() -> None:
    s = get_settings()
    r = resources.redis()
    cutoff = time.time() - s.offline_after_s
    claimed = await r.eval(EXPIRE_OFFLINE, 2, SEEN_KEY, GEO_KEY, repr(cutoff), 1000, "driver:")
    for i in range(0, len(claimed), 4):
        driver_id, lat, lon, ts = claimed[i : i + 4]
        last_seen = datetime.fromisoformat(ts) if ts else datetime.now(UTC)
        await status_topic.send(
            key=driver_id.encode(),
            value=DriverStatusEvent(
                event_id=deterministic_event_id("offline", driver_id, last_seen.isoformat()),
                driver_id=driver_id,
                status=DriverStatus.offline,
                previous=DriverStatus.online,
                last_seen=last_seen,
                lat=float(lat) if lat else None,
                lon=float(lon) if lon else None,
            ),
        )
    DRIVERS_ONLINE.set(await r.zcard(SEEN_KEY))
