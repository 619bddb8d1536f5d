"""Matching: bookings waiting for a driver get offers, in batches, as a minimum-cost assignment.

Every ``match_window_s`` a worker claims the due bookings of ``bookings:pending`` (a
lease: if the worker dies they come back), looks up candidates in the geo index of
available drivers with a widening radius, ranks them by ETA to pickup, and assigns the
whole batch at once with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``)
over the ETA matrix: greedy nearest-first lets an early booking take the driver a later
one needed far more. Each chosen driver is reserved atomically in Redis (two workers
never hold the same driver) and offered the job with a deadline through
``bookings.commands``. A second timer turns expired offers into ``booking.offer_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from faust.types import TopicT
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from scipy.optimize import linear_sum_assignment

from core.config import Settings
from schemas import BookingCommand, BookingCommandType, GeoPoint
from schemas.contracts import BOOKING_COMMANDS, CELLS_KEY, GEO_KEY, PENDING_KEY, SPEEDS_KEY, mirror_key
from streams import resources
from streams.app import Runtime
from streams.metrics import RECORDS
from streams.reservations import CLAIM_DUE, claim_expired, reserve

log = logging.getLogger(__name__)
BATCH = 500
NO_ROUTE = 1e9


@dataclass(frozen=True)
class Candidate:
    driver_id: str
    distance_m: float
    eta_s: float


def eta_seconds(distance_m: float, speed_mps: float, settings: Settings) -> float:
    """Road distance (straight line x road factor) over the speed expected on the way."""
    return distance_m * settings.road_factor / max(speed_mps, 0.5)


def assign(costs: list[list[float]]) -> list[tuple[int, int]]:
    """Minimum total cost pairs (row, column) of a bookings x drivers matrix; NO_ROUTE pairs are never used."""
    if not costs or not costs[0]:
        return []
    m = np.asarray(costs, dtype=float)
    rows, cols = linear_sum_assignment(m)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if m[r, c] < NO_ROUTE]


def greedy(costs: list[list[float]]) -> list[tuple[int, int]]:
    """Each booking in arrival order takes its cheapest free driver (the baseline of benchmarks/matching.py)."""
    taken: set[int] = set()
    out = []
    for r, row in enumerate(costs):
        best = min((c for c in range(len(row)) if c not in taken and row[c] < NO_ROUTE), key=row.__getitem__,
                   default=None)  # fmt: skip
        if best is not None:
            taken.add(best)
            out.append((r, best))
    return out


async def speeds(r: Any, driver_ids: list[str], settings: Settings) -> dict[str, float]:
    """Expected speed around each driver: learned per H3 cell and hour (``streams.eta``), else the default."""
    if not driver_ids:
        return {}
    cells = await r.hmget(CELLS_KEY, driver_ids)
    hour = datetime.now(UTC).hour
    keys = [f"{c}:{hour}" if c else "-" for c in cells]
    learned = await r.hmget(SPEEDS_KEY, keys)
    return {d: float(v) if v else settings.default_speed_mps for d, v in zip(driver_ids, learned, strict=True)}


async def candidates(r: Any, pickup: GeoPoint, exclude: set[str], settings: Settings) -> list[Candidate]:
    """Available drivers around the pickup, nearest first, widening the radius until some are found."""
    for radius in settings.match_radii_m:
        found = await r.geosearch(GEO_KEY, longitude=pickup.lon, latitude=pickup.lat, radius=radius, unit="m",
                                  sort="ASC", count=settings.match_candidates, withdist=True)  # fmt: skip
        found = [(d, float(dist)) for d, dist in found if d not in exclude]
        if found:
            speed = await speeds(r, [d for d, _ in found], settings)
            return [Candidate(d, dist, eta_seconds(dist, speed[d], settings)) for d, dist in found]
    return []


async def safe_candidates(r: Any, state: dict[str, Any], settings: Settings) -> list[Candidate]:
    """A booking's candidates; none when its own data is what fails (one booking never fails the round).

    A pickup the geo index refuses (Redis: beyond +-85.05 degrees) or a mirror that does not
    validate leaves that booking without candidates: it waits and expires on time like any
    unmatched booking, while the round goes on for the others. An unreachable Redis still
    fails the round (its bookings come back after the lease).
    """
    try:
        pickup = GeoPoint.model_validate(state["pickup"])
        return await candidates(r, pickup, set(state.get("declined_by") or []), settings)
    except (RedisConnectionError, RedisTimeoutError):
        raise
    except (ValueError, KeyError, TypeError, ResponseError) as exc:
        log.warning("booking %s: no candidates (%s)", state.get("booking_id"), exc)
        return []


async def system_command(commands: TopicT, booking_id: str, ctype: BookingCommandType, **fields: Any) -> None:
    cmd = BookingCommand(type=ctype, booking_id=uuid.UUID(booking_id), actor_id="matching", actor_role="system",
                         **fields)  # fmt: skip
    await commands.send(key=booking_id.encode(), value=cmd)


async def match_once(settings: Settings, commands: TopicT) -> int:
    """One matching round over the due bookings; returns how many offers it made."""
    r = resources.redis()
    now = time.time()
    lease = now + max(10.0, settings.match_window_s * 5)
    due = await r.eval(CLAIM_DUE, 1, PENDING_KEY, repr(now), BATCH, repr(lease))
    if not due:
        return 0
    RECORDS.labels("matching").inc(len(due))
    raw = await r.mget([mirror_key(b) for b in due])
    open_: list[dict[str, Any]] = []
    done = []
    for bid, doc in zip(due, raw, strict=True):
        state = orjson.loads(doc) if doc else None
        if state is None or state["status"] != "requested":
            done.append(bid)  # moved on (cancelled, offered by a replay...): nothing to match
        else:
            open_.append(state)
    # Concurrently: a round of hundreds of bookings must not wait for their lookups one by one.
    per_booking = list(await asyncio.gather(*(safe_candidates(r, st, settings) for st in open_)))
    drivers = sorted({c.driver_id for cs in per_booking for c in cs})
    col = {d: i for i, d in enumerate(drivers)}
    costs = [[NO_ROUTE] * len(drivers) for _ in open_]
    for i, cs in enumerate(per_booking):
        for c in cs:
            costs[i][col[c.driver_id]] = c.eta_s
    offered = 0
    matched: set[int] = set()
    deadline = datetime.now(UTC) + timedelta(seconds=settings.offer_timeout_s)
    ttl_ms = int((settings.offer_timeout_s + 30) * 1000)
    for i, j in sorted(assign(costs), key=lambda p: costs[p[0]][p[1]]):
        bid, driver = open_[i]["booking_id"], drivers[j]
        if await reserve(r, bid, driver, ttl_ms, deadline.timestamp()):
            await system_command(commands, bid, "booking.offer", driver_id=driver, offer_deadline=deadline,
                                 eta_s=round(costs[i][j], 1))  # fmt: skip
            matched.add(i)
            offered += 1
    retry = now + settings.match_window_s
    pipe = r.pipeline(transaction=False)
    for i, state in enumerate(open_):
        bid = state["booking_id"]
        if i in matched:
            pipe.zrem(PENDING_KEY, bid)
            continue
        age = now - datetime.fromisoformat(state["created_at"]).timestamp()
        if age >= settings.match_timeout_s:
            far = settings.match_radii_m[-1] / 1000
            reason = f"no driver available within {far:g} km" if not per_booking[i] else "no driver accepted in time"
            await system_command(commands, bid, "booking.expire", reason=reason)
            pipe.zrem(PENDING_KEY, bid)
        else:
            pipe.zadd(PENDING_KEY, {bid: retry})
    for bid in done:
        pipe.zrem(PENDING_KEY, bid)
    await pipe.execute()
    return offered


def install(rt: Runtime) -> None:
    """The matching rounds and the offer-timeout timer."""
    s = rt.settings
    commands = rt.topic(BOOKING_COMMANDS)

    @rt.app.timer(interval=s.match_window_s, name="streams.matching.match_pending")
    async def match_pending() -> None:
        try:
            await match_once(s, commands)
        except Exception:  # a failed round leaves its bookings leased; they come back after the lease
            log.exception("matching round failed")

    @rt.timer(interval=0.5, name="streams.matching.expire_offers")
    async def expire_offers() -> None:
        for bid, driver in await claim_expired(resources.redis(), time.time(), s.offer_claim_lease_s):
            await system_command(commands, bid, "booking.offer_timeout", driver_id=driver)
