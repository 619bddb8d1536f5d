"""``WS /v1/notifications``: live booking (and, for staff, fleet) events for the caller.

Authenticate with ``?token=`` (or an Authorization header). A customer hears about
their bookings, a driver about offers and jobs, dispatchers and admins about every
booking and every driver's location, a tracking link's holder about that one booking.
``?after=<id>`` (the greatest ``id`` received) replays what was missed first, in order,
without duplicates. Close codes:
4401 bad token, 1008 bad parameters, 1013 the client read too slowly (its queue filled
or a send did not complete within ``notify_send_timeout_s``; reconnect with ``after``),
1012 the servers were restarted and the socket could not catch up itself (reconnect with
``after``). After a RabbitMQ reconnect an open socket first sends, in order, what it
missed meanwhile, from the replay stream.
The first message, ``{"type": "subscribed", "id": …}``, says live delivery has started and
gives a cursor for ``after`` even if nothing else comes. An application heartbeat
``{"type": "heartbeat"}`` is sent when idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError

from api.notify import DROPPED, stream_id
from api.security import Principal
from schemas.contracts import (
    LOCATIONS_PATTERN,
    STAFF,
    STATUS_PATTERN,
    audience_pattern,
    booking_audience,
    customer_audience,
    driver_audience,
    replay_key,
)
from schemas.notifications import Heartbeat, Subscribed

HEARTBEAT = Heartbeat().model_dump_json()

router = APIRouter(tags=["notifications"])
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_U64 = 2**64 - 1
#: Ids a socket remembers having sent, to tell a late message from a repeated one.
RECENT_IDS = 256


def valid_after(after: str) -> bool:
    """A Redis stream id ``ms-seq`` that XRANGE's exclusive start accepts (each part a u64, not the last id)."""
    if not STREAM_ID.match(after):
        return False
    ms, seq = stream_id(after)
    return ms <= _U64 and seq <= _U64 and (ms, seq) != (_U64, _U64)


def audience(principal: Principal) -> tuple[str, list[str]]:
    """(replay scope, routing patterns) of a caller."""
    if principal.sees_all_bookings:
        scope, extra = STAFF, [LOCATIONS_PATTERN, STATUS_PATTERN]
    elif principal.role == "viewer" and principal.booking_id:
        scope, extra = booking_audience(principal.booking_id), []
    elif principal.role == "driver" and principal.driver_id:
        scope, extra = driver_audience(principal.driver_id), []
    else:
        scope, extra = customer_audience(principal.subject), []
    return scope, [audience_pattern(scope), *extra]


@router.websocket("/v1/notifications")
async def notifications(ws: WebSocket) -> None:
    res = ws.app.state.resources
    s = res.settings
    token = ws.query_params.get("token") or ws.headers.get("authorization", "").removeprefix("Bearer ").strip()
    principal = await res.auth.authenticate(token)
    # Accepted before refusing: a browser sees close codes, not the status of a failed upgrade.
    await ws.accept()
    if principal is None:
        await ws.close(code=4401, reason="missing or invalid token")
        return
    after = ws.query_params.get("after")
    if after is not None and not valid_after(after):
        await ws.close(code=1008, reason="after must be the id of a message received before")
        return
    scope, patterns = audience(principal)
    sub = await res.hub.subscribe(patterns, s.notify_queue_size)
    gone = False

    async def watch() -> None:  # the client may only close (or ping); anything else is ignored
        nonlocal gone
        with contextlib.suppress(Exception):
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        gone = True
        sub.wake.set()

    watcher = asyncio.create_task(watch())
    last = floor = (0, 0)  # the greatest id sent; the client's own cursor (after=)
    # Replay stream ids are Redis's clock in ms: a gap before this socket's first replayable
    # message is filled from a second before it subscribed (clock skew between hosts).
    joined = (int(time.time() * 1000) - 1000, 0)
    loop = asyncio.get_running_loop()

    async def too_slow() -> None:
        # Bounded: the close frame waits behind the full buffer like any other frame.
        DROPPED.inc()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=1013, reason="too slow: reconnect with ?after=<last id>"), 1.0)

    async def send(text: str) -> None:
        # A client that stops reading blocks the send once the buffers are full: give up on
        # it (TooSlow) rather than let its queue, and only its queue, grow stale.
        await asyncio.wait_for(ws.send_text(text), s.notify_send_timeout_s)

    # Ids sent lately, once the socket has sent any: a message can arrive after one with a
    # greater id (a worker that took over a dead one's events sends them with the ids they
    # got first), and is then sent late rather than taken for one already sent.
    recent: dict[tuple[int, int], None] | None = None
    evicted = (0, 0)  # the greatest id that left the window

    def sent(sid: tuple[int, int]) -> None:
        nonlocal last, recent, evicted
        last = max(last, sid)
        if recent is None:
            recent = {}
        recent[sid] = None
        if len(recent) > RECENT_IDS:
            oldest = next(iter(recent))
            del recent[oldest]
            evicted = max(evicted, oldest)

    def already_sent(mid: tuple[int, int]) -> bool:
        if mid <= floor:  # the client had it: it asked for what came after
            return True
        if mid > last:
            return False
        # Below the greatest id sent: sent if in the window; at or below what left it, maybe (not repeated).
        return (recent is not None and mid in recent) or mid <= evicted

    async def replay(since: str) -> None:
        entries = await res.redis.xrange(replay_key(scope), min=f"({since}", max="+", count=s.notify_replay_max)
        for sid, fields in entries:
            mid = stream_id(sid)
            if already_sent(mid):
                continue
            await send(orjson.dumps({**orjson.loads(fields["d"]), "id": sid}).decode())
            sent(mid)

    try:
        if after is not None:
            last = floor = stream_id(after)
            await replay(after)
            cursor: str | None = "{}-{}".format(*last)
        else:
            try:  # where the replay stream is now: what comes later reaches this socket
                newest = await res.redis.xrevrange(replay_key(scope), count=1)
                cursor = newest[0][0] if newest else "0-0"
            except RedisError:
                cursor = None
        await send(Subscribed(id=cursor).model_dump_json())
        while not gone:
            if sub.overflowed:
                await too_slow()
                return
            if sub.gap:  # RabbitMQ was away: what it did not bring is in the replay stream
                sub.gap = False
                try:
                    await replay("{}-{}".format(*max(evicted, floor if after is not None else joined)))
                except RedisError:  # Redis away as well: the client catches up when it reconnects
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(code=1012, reason="reconnect with ?after=<last id>"), 1.0)
                    return
                continue
            if not sub.pending:
                # Idle: one future until a message, the client's close or the heartbeat is due.
                sub.wake.clear()
                timer = loop.call_later(s.notify_heartbeat_s, sub.wake.set)
                await sub.wake.wait()
                timer.cancel()
                if not sub.pending and not gone and not sub.overflowed and not sub.gap:
                    await send(HEARTBEAT)
                continue
            message = sub.pending.popleft()
            if message.id is not None:  # replayable: deliver each id once
                if already_sent(message.id):
                    continue
                await send(message.text)
                sent(message.id)
                continue
            await send(message.text)
    except TimeoutError:
        await too_slow()
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        watcher.cancel()
        await res.hub.unsubscribe(sub)
