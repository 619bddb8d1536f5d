"""Driver state: last position, speed, heading, status and last-seen, per driver.

The authoritative copy of a driver's last fix is the clean step's table (``streams.clean``:
the last accepted ping with its speed and heading, recovered from its changelog after a
restart); one table rather than a second one here, because each table write is a changelog
record per device batch on the hot path. This step mirrors it to Redis, where the API and
matching read it without Kafka, and adds the status:

- ``driver:{id}``           hash of ``schemas.drivers.DriverState.HASH_FIELDS`` (the API reads it with that model)
- ``drivers:geo:available`` geo set of online drivers that are not busy
- ``drivers:last_seen``     sorted set, score = wall-clock time of the last processed ping
- ``drivers:known``         the same, kept while the driver is offline (the dispatcher's fleet)

A step of the telemetry agent (``streams.pipeline``). Redis writes of a whole batch go
through one pipeline of a Lua script that keeps a busy driver out of the geo index and
ignores a fix not newer (by seq) than the one Redis holds, so a batch replayed after a
crash changes nothing twice, in this process or one where clean runs elsewhere.
The offline timer runs on every worker; each stale driver is claimed atomically by one
of them (a Lua ``ZREM``), which then emits the ``driver.status`` offline event.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from faust.types import TopicT
from redis.asyncio.client import Pipeline

from core.clients import Lua, execute
from schemas import DriverStatus, DriverStatusEvent, TelemetryBatch, deterministic_event_id
from schemas.base import GEO_MAX_LAT
from schemas.contracts import DRIVER_STATUS, GEO_KEY, KNOWN_KEY, SEEN_KEY, driver_key, reserve_key
from streams import pipeline, resources
from streams.app import Runtime
from streams.metrics import DRIVERS_ONLINE, PINGS

# KEYS: driver hash, geo set, last-seen zset, reservation, known zset.
# ARGV: id, lat, lon, speed, heading, ts, seq, now.
# Returns 1 when the driver was offline (or unknown) and is now online (busy if a booking holds it),
# -1 when Redis already holds this seq or a newer one (a replay: nothing changes).
# Busy follows the reservation key: a driver whose reservation expired without a release is free again.
UPDATE_POSITION = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'seq')
if cur[2] and tonumber(cur[2]) >= tonumber(ARGV[7]) then return -1 end
local status = cur[1]
local came_online = 0
if (not status) or status == 'offline' then
  if redis.call('EXISTS', KEYS[4]) == 1 then status = 'busy' else status = 'online' end
  came_online = 1
elseif status == 'busy' and redis.call('EXISTS', KEYS[4]) == 0 then
  status = 'online'  -- busy means held by a booking; a hold that lapsed unreleased (a crash) must not strand it
end
redis.call('HSET', KEYS[1], 'lat', ARGV[2], 'lon', ARGV[3], 'speed_mps', ARGV[4], 'heading_deg', ARGV[5],
           'ts', ARGV[6], 'seq', ARGV[7], 'seen', ARGV[8], 'status', status)
local lat = tonumber(ARGV[2])
if status == 'online' and lat >= -GEO_MAX_LAT and lat <= GEO_MAX_LAT then
  redis.call('GEOADD', KEYS[2], ARGV[3], ARGV[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])  -- busy, or beyond the geo index's range (Redis refuses it)
end
redis.call('ZADD', KEYS[3], ARGV[8], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[8], ARGV[1])
return came_online
""".replace("GEO_MAX_LAT", repr(GEO_MAX_LAT))

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


def position_keys(driver: str) -> list[str]:
    """The KEYS of :data:`UPDATE_POSITION` for one driver, in its order."""
    return [driver_key(driver), GEO_KEY, SEEN_KEY, reserve_key(driver), KNOWN_KEY]


def _fmt(v: float | None) -> str:
    return "" if v is None else repr(v)


def step(rt: Runtime) -> pipeline.StepFactory:
    """Each driver's latest fix into Redis (state, geo index, last seen), and its coming online."""
    status_topic = rt.topic(DRIVER_STATUS)

    async def make() -> pipeline.Step:
        return _track_drivers(resources.redis(), status_topic)

    return make


def _track_drivers(r: Any, status_topic: TopicT) -> pipeline.Step:
    update = Lua(UPDATE_POSITION)

    async def track_drivers(items: list[pipeline.Item]) -> None:
        now = repr(time.time())
        newest: dict[str, TelemetryBatch] = {}
        for item in items:
            batch = item.batch
            PINGS.labels("driver_state").inc(len(batch.pings))
            newest[batch.driver_id] = batch  # clean's output of one driver comes in seq order

        def build(pipe: Pipeline) -> None:
            for driver, batch in newest.items():
                last = batch.pings[-1]
                update.queue(pipe, position_keys(driver),
                             [driver, _fmt(last.lat), _fmt(last.lon), _fmt(last.speed_mps), _fmt(last.heading_deg),
                              last.ts.isoformat(), last.seq, now])  # fmt: skip

        results = await execute(r, build, [update])
        for (driver, batch), came_online in zip(newest.items(), results, strict=True):
            if came_online == 1:
                last = batch.pings[-1]
                await status_topic.send(
                    key=driver.encode(),
                    value=DriverStatusEvent(
                        event_id=deterministic_event_id("online", driver, last.seq),
                        driver_id=driver,
                        status=DriverStatus.online,
                        previous=DriverStatus.offline,
                        last_seen=last.ts,
                        lat=last.lat,
                        lon=last.lon,
                    ),
                )

    return track_drivers


def install(rt: Runtime) -> None:
    """The timer that takes silent drivers offline (the ``driver_state`` agent's other half)."""
    s = rt.settings
    status_topic = rt.topic(DRIVER_STATUS)

    @rt.timer(interval=s.offline_check_s, name="streams.driver_state.expire_silent_drivers")
    async def expire_silent_drivers() -> None:
        r = resources.redis()
        cutoff = time.time() - s.offline_after_s
        claimed = await r.eval(EXPIRE_OFFLINE, 2, SEEN_KEY, GEO_KEY, repr(cutoff), 1000, driver_key(""))
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
        await r.zremrangebyscore(KNOWN_KEY, "-inf", time.time() - s.driver_known_s)  # silent for long: off the map
        DRIVERS_ONLINE.set(await r.zcard(SEEN_KEY))
