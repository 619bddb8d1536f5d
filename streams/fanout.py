"""Notifications to their audiences: a bounded replay stream per audience in Redis, then RabbitMQ.

The replay stream id travels with each message: a reconnecting socket asks for what
came after the last id it saw, and the notification layer drops anything not newer.
Shared by the agents that notify (``streams.publish``, ``streams.eta``); importing it
registers nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio.client import Pipeline

from core.clients import Lua, execute
from schemas import BookingEvent, EtaUpdate
from schemas.contracts import (
    STAFF,
    audience_key,
    booking_audience,
    customer_audience,
    driver_audience,
    replay_ids_key,
    replay_key,
)
from sinks.rabbitmq import Outgoing, RabbitSink
from streams import resources

# KEYS: replay stream, event-id → stream-id hash.  ARGV: event id, body, max length, ttl.
# Appends each notification once per audience; a replayed event gets its first id back.
APPEND_ONCE = """
local have = redis.call('HGET', KEYS[2], ARGV[1])
if have then return have end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], id)
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return id
"""
REPLAY_KEEP = 1000
REPLAY_TTL_S = 7 * 24 * 3600


def audiences(e: BookingEvent) -> list[str]:
    """Who hears of a booking event: its customer, the driver concerned, staff, and its tracking links."""
    out = [customer_audience(e.customer_id), STAFF, booking_audience(str(e.booking_id))]
    if e.driver_id:
        out.append(driver_audience(e.driver_id))
    return out


def booking_notification(e: BookingEvent) -> dict[str, object]:
    return {
        "type": e.type,
        "event_id": str(e.event_id),
        "at": e.occurred_at.isoformat(),
        "booking_id": str(e.booking_id),
        "status": e.status.value,
        "customer_id": e.customer_id,
        "driver_id": e.driver_id,
        "offer_deadline": e.offer_deadline.isoformat() if e.offer_deadline else None,
        "eta_s": e.eta_s,
        "reason": e.reason,
        "version": e.version,
        "pickup": e.pickup.model_dump() if e.pickup else None,
        "dropoff": e.dropoff.model_dump() if e.dropoff else None,
    }


def eta_notification(e: EtaUpdate) -> dict[str, object]:
    return {"type": e.type, "event_id": str(e.event_id), "at": e.occurred_at.isoformat(),
            "booking_id": str(e.booking_id), "driver_id": e.driver_id, "phase": e.phase, "eta_s": e.eta_s,
            "distance_m": e.distance_m, "lat": e.lat, "lon": e.lon}  # fmt: skip


class Notifier:
    """One agent's replay-stream script and RabbitMQ sink."""

    append = Lua(APPEND_ONCE)

    def __init__(self, r: Any, sink: RabbitSink) -> None:
        self.redis = r
        self.sink = sink

    @classmethod
    async def open(cls) -> Notifier:
        return cls(resources.redis(), RabbitSink(await resources.rabbit()))

    async def send(self, items: list[tuple[list[str], dict[str, object]]]) -> None:
        """Each notification into its audiences' replay streams (one pipeline), then to RabbitMQ with the ids."""
        encoded = [(scopes, body, orjson.dumps(body)) for scopes, body in items]  # once, not per audience
        pending = [(scope, body, raw) for scopes, body, raw in encoded for scope in scopes]
        if not pending:
            return

        def build(pipe: Pipeline) -> None:
            for scope, body, raw in pending:
                args = [body["event_id"], raw, REPLAY_KEEP, REPLAY_TTL_S]
                self.append.queue(pipe, [replay_key(scope), replay_ids_key(scope)], args)

        ids = await execute(self.redis, build, [self.append])
        out = []
        for (scope, body, _), sid in zip(pending, ids, strict=True):
            key, mid = audience_key(scope, str(body["type"])), f"{body['event_id']}:{scope}"
            out.append(Outgoing(key, orjson.dumps({**body, "id": sid}), mid, str(body["type"])))
        await self.sink.write(out)
