"""Driver reservations in Redis: one booking holds a driver at a time, across all workers.

- ``reserve:driver:{id}``  the booking id holding the driver (TTL while only offered)
- ``offers:deadlines``     sorted set ``{booking}|{driver}`` by offer deadline
- ``bookings:pending``     sorted set of bookings waiting for a driver, by next attempt time

Reserving and releasing are Lua scripts, so "is the driver free" and "take it" are one
step: two workers, or two bookings in one batch, can never hold the same driver. A
reservation outlives no offer: its deadline entry is claimed by the offer timer of any
worker (also after the worker that reserved died) and turned into ``booking.offer_timeout``.
A claim is a lease, not a removal: the booking agent removes the entry when it handles the
timeout, so a timeout lost with a killed worker's producer buffer is sent again.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from schemas.base import GEO_MAX_LAT
from schemas.contracts import DEADLINES_KEY, GEO_KEY, driver_key, reserve_key

# KEYS: reserve key, driver hash, geo set, deadlines.  ARGV: booking, driver, ttl ms, deadline score.
RESERVE = """
if redis.call('HGET', KEYS[2], 'status') ~= 'online' then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], 'status', 'busy')
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1] .. '|' .. ARGV[2])
return 1
"""

# KEYS: reserve key, driver hash, geo set, deadlines.  ARGV: booking, driver.
# Only the booking that holds the driver can release it; a busy driver becomes available again.
RELEASE = """
redis.call('ZREM', KEYS[4], ARGV[1] .. '|' .. ARGV[2])
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('HGET', KEYS[2], 'status') == 'busy' then
  redis.call('HSET', KEYS[2], 'status', 'online')
  local pos = redis.call('HMGET', KEYS[2], 'lat', 'lon')
  local lat = tonumber(pos[1])
  if lat and pos[2] and lat >= -GEO_MAX_LAT and lat <= GEO_MAX_LAT then
    redis.call('GEOADD', KEYS[3], pos[2], pos[1], ARGV[2])
  end
end
return 1
""".replace("GEO_MAX_LAT", repr(GEO_MAX_LAT))

# KEYS: reserve key, deadlines.  ARGV: booking, driver.  The driver keeps the job until it ends.
HOLD = """
redis.call('ZREM', KEYS[2], ARGV[1] .. '|' .. ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PERSIST', KEYS[1]); return 1 end
return 0
"""

# KEYS: a sorted set.  ARGV: now, limit, lease (score given to claimed members).
# Claims due members for this caller: they come back only if it does not finish in time.
# Used for pending bookings and for expired offers.
CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], m) end
return due
"""


async def claim_expired(r: aioredis.Redis, now: float, lease_s: float, limit: int = 500) -> list[tuple[str, str]]:
    """(booking, driver) of the offers past their deadline, leased to the caller for ``lease_s``."""
    due = await r.eval(CLAIM_DUE, 1, DEADLINES_KEY, repr(now), limit, repr(now + lease_s))
    return [(b, d) for b, _, d in (m.partition("|") for m in due)]


async def reserve(r: aioredis.Redis, booking_id: str, driver_id: str, ttl_ms: int, deadline: float) -> bool:
    keys = [reserve_key(driver_id), driver_key(driver_id), GEO_KEY, DEADLINES_KEY]
    return bool(await r.eval(RESERVE, 4, *keys, booking_id, driver_id, ttl_ms, repr(deadline)))


def release_on(pipe: Any, booking_id: str, driver_id: str) -> None:
    keys = [reserve_key(driver_id), driver_key(driver_id), GEO_KEY, DEADLINES_KEY]
    pipe.eval(RELEASE, 4, *keys, booking_id, driver_id)


def hold_on(pipe: Any, booking_id: str, driver_id: str) -> None:
    pipe.eval(HOLD, 2, reserve_key(driver_id), DEADLINES_KEY, booking_id, driver_id)
