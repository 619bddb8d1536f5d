"""Notifications to their audiences: a bounded replay stream per audience in Redis, then RabbitMQ.

The replay stream id travels with each message: a reconnecting socket asks for what
came after the last id it saw, and the notification layer drops anything not newer.
Shared by the agents that notify (``streams.publish``, ``streams.eta``); importing it
registers nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from redis.asyncio.client import Pipeline

from core.clients import Lua, execute
from schemas import BookingEvent
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


class Notifier:
    """One agent's replay-stream script and RabbitMQ sink."""

    append = Lua(APPEND_ONCE)

    def __init__(self, r: Any, sink: RabbitSink) -> None:
        self.redis = r
        self.sink = sink

    @classmethod
    async def open(cls) -> Notifier:
        return cls(resources.redis(), RabbitSink(await resources.rabbit()))

    async def send(self, items: list[tuple[list[str], BaseModel]]) -> None:
        """Each notification into its audiences' replay streams (one pipeline), then to RabbitMQ with the ids.

        A notification is a model with ``type`` and ``event_id`` (``schemas.notifications``, or a
        stream agent's own event); the replay stream id is added to what each socket receives.
        """
        encoded = []
        for scopes, model in items:
            body = model.model_dump(mode="json")
            encoded.append((scopes, body, orjson.dumps(body)))  # once, not per audience
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
