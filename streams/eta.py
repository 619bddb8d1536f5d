"""ETAs: per active booking, time to pickup then to dropoff, as the driver's pings arrive.

ETA = straight-line distance x ``road_factor`` at the expected speed of each H3 cell the
line crosses (``travel_s``). Expected speeds are learned online from the fleet's own
pings: an exponentially weighted mean per H3 cell (resolution 7, ~5 km²) and hour of
day, kept in the Redis hash ``speeds`` (the matching ranks candidates with the same
numbers), falling back to ``default_speed_mps``. Estimates are smoothed, and an
``eta.update`` is emitted when it moved meaningfully (``eta_min_change_s`` or
``eta_min_change_ratio``) or ``eta_max_interval_s`` passed: those updates also carry the
driver's position to the customer, straight from this step of the telemetry agent
(``streams.pipeline``) to the notification fan-out. Arrival at the pickup is a circular
geofence (``streams.geo.Zone``) of ``arrival_radius_m`` around it.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import h3
import orjson
from faust.types import TopicT
from redis.asyncio.client import Pipeline

from core.clients import Lua, execute, fields
from core.config import Settings
from schemas import BookingCommand, EtaUpdate, TelemetryBatch
from schemas.contracts import (
    BOOKING_COMMANDS,
    CELLS_KEY,
    ETA_UPDATES,
    JOBS_KEY,
    SPEEDS_KEY,
    STAFF,
    booking_audience,
    customer_audience,
    mirror_key,
)
from schemas.notifications import EtaNotice
from streams import pipeline, resources
from streams.app import Runtime
from streams.fanout import Notifier
from streams.geo import Zone, haversine_m
from streams.speeds import SPEED_RES, learn_batch, travel_s

SMOOTHING = 0.5


def should_emit(sent_s: float, sent_at: float, eta_s: float, now: float, s: Settings) -> bool:
    """A meaningful change since the last emitted estimate, or it is time to say where the driver is."""
    change = abs(eta_s - sent_s)
    return (change >= s.eta_min_change_s or change >= s.eta_min_change_ratio * max(sent_s, 1.0)
            or now - sent_at >= s.eta_max_interval_s)  # fmt: skip


class Estimates:
    """This worker's last emitted ETA per booking and its learned speeds (flushed to Redis)."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, Any]] = {}
        self.arrived: set[str] = set()  # bookings whose pickup fence this worker reported (once is enough)
        self.speeds: dict[str, float] = {}
        self.dirty: set[str] = set()


# KEYS: driver → booking hash.  ARGV: the booking mirror key's prefix, driver ids.
# The drivers that work on a booking, each with its booking's mirror: one round trip, not two.
JOBS_WITH_BOOKINGS = """
local out = {}
for i = 2, #ARGV do
  local bid = redis.call('HGET', KEYS[1], ARGV[i])
  if bid then
    out[#out + 1] = ARGV[i]
    out[#out + 1] = redis.call('GET', ARGV[1] .. bid) or ''
  end
end
return out
"""


def step(rt: Runtime) -> pipeline.StepFactory:
    """Live ETAs of the bookings whose drivers moved, straight to their audiences; speeds learned on the way."""
    s = rt.settings
    eta_topic = rt.topic(ETA_UPDATES)
    commands_topic = rt.topic(BOOKING_COMMANDS)
    est = Estimates()

    async def make() -> pipeline.Step:
        return _estimate(s, resources.redis(), await Notifier.open(), eta_topic, commands_topic, est)

    return make


def _estimate(s: Settings, r: Any, notifier: Notifier, eta_topic: TopicT, commands_topic: TopicT,
              est: Estimates) -> pipeline.Step:  # fmt: skip
    jobs_with_bookings = Lua(JOBS_WITH_BOOKINGS)

    async def estimate(items: list[pipeline.Item]) -> None:
        hour = datetime.now(UTC).hour
        newest: dict[str, TelemetryBatch] = {}
        for item in items:
            b = item.batch
            newest[b.driver_id] = b
            learn_batch(b.pings, hour, est.speeds, est.dirty, s.speed_learning_rate)
        drivers = list(newest)
        cells = {d: h3.latlng_to_cell(b.pings[-1].lat, b.pings[-1].lon, SPEED_RES) for d, b in newest.items()}
        speeds = {k: round(est.speeds[k], 3) for k in est.dirty}
        est.dirty.clear()

        def build(pipe: Pipeline) -> None:
            jobs_with_bookings.queue(pipe, [JOBS_KEY], [mirror_key(""), *drivers])
            pipe.hset(CELLS_KEY, mapping=fields(cells))
            if speeds:
                pipe.hset(SPEEDS_KEY, mapping=fields(speeds))

        found, *_ = await execute(r, build, [jobs_with_bookings])
        if not found:
            return
        if len(est.last) > 50_000:  # finished bookings are never looked at again; forgetting costs one update
            est.last.clear()
            est.arrived.clear()
        now = time.time()
        updates: list[EtaUpdate] = []
        for driver, doc in zip(found[::2], found[1::2], strict=True):
            booking = orjson.loads(doc) if doc else None
            if booking is not None and booking.get("driver_id") == driver:
                update = await follow(booking, newest[driver], hour, now, s, est, commands_topic)
                if update is not None:
                    updates.append(update)
        # Straight to the customer's socket (no further Kafka hop); eta.updates keeps the record.
        scopes = [[*([customer_audience(u.customer_id)] if u.customer_id else []), STAFF,
                   booking_audience(str(u.booking_id))] for u in updates]  # fmt: skip
        await notifier.send([(who, EtaNotice.of(u)) for who, u in zip(scopes, updates, strict=True)])
        for u in updates:
            await eta_topic.send(key=str(u.booking_id).encode(), value=u)

    return estimate


async def follow(booking: dict[str, Any], batch: TelemetryBatch, hour: int, now: float, s: Settings,
                 est: Estimates, commands_topic: TopicT) -> EtaUpdate | None:  # fmt: skip
    """This booking's new estimate when it is worth telling; the pickup fence's arrival command on the way."""
    status = booking["status"]
    if status not in ("assigned", "driver_arrived", "picked_up"):
        return None
    phase = "to_dropoff" if status == "picked_up" else "to_pickup"
    target = booking["dropoff"] if phase == "to_dropoff" else booking["pickup"]
    p = batch.pings[-1]
    bid = booking["booking_id"]
    if status == "assigned":
        fence = Zone.from_doc({"_id": f"pickup:{bid}", "name": "pickup", "circle": {"center": target,
                               "radius_m": s.arrival_radius_m}})  # fmt: skip
        if bid not in est.arrived and fence.contains(p.lat, p.lon):
            est.arrived.add(bid)
            await commands_topic.send(
                key=bid.encode(),
                value=BookingCommand(
                    type="booking.mark_arrived", booking_id=uuid.UUID(bid), actor_id="geofence", actor_role="system"
                ),
            )
    distance = haversine_m(p.lat, p.lon, target["lat"], target["lon"])
    raw = travel_s(p.lat, p.lon, target["lat"], target["lon"], est.speeds, hour, s)
    prev = est.last.get(bid)
    if prev is None or prev["phase"] != phase:
        smoothed, emit = raw, True
    else:
        smoothed = SMOOTHING * raw + (1 - SMOOTHING) * prev["smoothed"]
        emit = should_emit(prev["sent"], prev["at"], smoothed, now, s)
    if not emit:
        est.last[bid] = {**prev, "smoothed": smoothed}  # type: ignore[dict-item]
        return None
    est.last[bid] = {"phase": phase, "smoothed": smoothed, "sent": smoothed, "at": now}
    return EtaUpdate(booking_id=uuid.UUID(bid), customer_id=booking["customer_id"], driver_id=batch.driver_id,
                     phase=phase, eta_s=round(smoothed, 1), distance_m=round(distance, 1), lat=p.lat,
                     lon=p.lon)  # fmt: skip
