"""Bookings: the agent that owns every booking's state machine (``bookings.commands``).

Per command: decide with :func:`streams.booking_rules.apply`, emit the resulting events
to ``bookings.events``, mirror the booking to Redis (``booking:{id}``, what the API and
matching read), answer the API on ``reply:{command_id}`` and apply the driver
reservation effects; then store the state in a changelog-backed table. Each booking's
last commands and their outcome are kept with it, so a command replayed after a crash
gets the same answer and re-emits the same events (same ids) instead of a new decision.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from faust.types import StreamT

from schemas import BookingCommand, decode, encode
from schemas.contracts import (
    BOOKING_COMMANDS,
    BOOKING_EVENTS,
    DEADLINES_KEY,
    JOBS_KEY,
    PENDING_KEY,
    mirror_key,
    reply_key,
)
from streams import resources
from streams.app import Runtime
from streams.booking_rules import apply, public_view
from streams.metrics import RECORDS
from streams.poison import ServerUnavailable, retrying
from streams.reservations import hold_on, release_on

RECENT = 16
REPLY_TTL_S = 60
#: Statuses after which the driver that had the job is free again.
RELEASING = {"requested", "cancelled", "expired", "delivered"}


def _effects(pipe: Any, before: dict[str, Any] | None, after: dict[str, Any] | None,
             cmd: BookingCommand, ok: bool, error: str | None) -> None:  # fmt: skip
    bid = str(cmd.booking_id)
    if after is not None:
        pipe.set(mirror_key(bid), orjson.dumps(after))
        if after["status"] == "requested":
            pipe.zadd(PENDING_KEY, {bid: time.time()}, nx=True)  # matching picks it up now
        else:
            pipe.zrem(PENDING_KEY, bid)
        prev_driver = (before or {}).get("driver_id")
        if prev_driver and after["status"] in RELEASING:
            release_on(pipe, bid, prev_driver)
        if after["status"] == "assigned" and after.get("driver_id"):
            hold_on(pipe, bid, after["driver_id"])
        if after["status"] in ("assigned", "driver_arrived", "picked_up") and after.get("driver_id"):
            pipe.hset(JOBS_KEY, after["driver_id"], bid)  # the ETA agent follows this driver for this booking
        elif prev_driver:
            pipe.hdel(JOBS_KEY, prev_driver)
    holds = (after or {}).get("driver_id") == cmd.driver_id
    if cmd.type == "booking.offer_timeout" and cmd.driver_id:
        pipe.zrem(DEADLINES_KEY, f"{bid}|{cmd.driver_id}")  # the timer's claim was a lease: handled now
        if not holds:
            release_on(pipe, bid, cmd.driver_id)  # reserved but never offered (the matcher died): free it
    if cmd.type == "booking.offer" and not ok and cmd.driver_id and not holds:
        # The booking moved on (cancelled...) while it was being matched. Not when it holds this
        # driver now: a replayed rejection must not free a later offer to the same driver.
        release_on(pipe, bid, cmd.driver_id)
    reply = {"ok": ok, "error": error, "booking": public_view(after) if after else None}
    key = reply_key(str(cmd.event_id))
    pipe.lpush(key, orjson.dumps(reply))
    pipe.expire(key, REPLY_TTL_S)


def install(rt: Runtime) -> None:
    """The bookings agent: each command applied once to its booking's state (a changelog-backed table)."""
    events_topic = rt.topic(BOOKING_EVENTS)
    booking_table = rt.table("booking-state")

    @rt.app.agent(rt.topic(BOOKING_COMMANDS), name="streams.bookings.run_bookings")
    async def run_bookings(stream: StreamT[Any]) -> None:
        r = resources.redis()
        budget = rt.settings.server_retry_s

        async def handle(cmd: BookingCommand) -> None:
            key = str(cmd.booking_id).encode()
            stored = booking_table.get(key) or {}
            before: dict[str, Any] | None = stored.get("booking")
            recent: list[list[Any]] = stored.get("recent", [])
            cid = str(cmd.event_id)
            seen = next((x for x in recent if x[0] == cid), None)
            if seen is not None:  # a replay: same answer, same events
                ok, error, events, after = seen[1], seen[2], [decode(e) for e in seen[3]], before
                before = seen[4]
            else:
                d = apply(before, cmd, datetime.now(UTC))
                ok, error, events, after = d.ok, d.error, d.events, d.state
            for e in events:
                await events_topic.send(key=key, value=e)
            pipe = r.pipeline(transaction=False)
            _effects(pipe, before, after, cmd, ok, error)
            await pipe.execute()
            if seen is None and after is not None:
                entry = [cid, ok, error, [encode(e).decode() for e in events], before]
                booking_table[key] = {"booking": after, "recent": [*recent, entry][-RECENT:]}

        async for event in stream.events():
            RECORDS.labels("bookings").inc()
            cmd = event.value
            if not isinstance(cmd, BookingCommand):
                continue
            try:
                await retrying(functools.partial(handle, cmd), budget, "bookings")
            except ServerUnavailable:
                raise
            except Exception as exc:  # this command's data: dead-lettered, the other bookings go on
                await rt.dead_letter(event.message, "step_failed", exc, step="bookings")
