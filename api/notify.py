"""The notification hub of one API process: RabbitMQ in, WebSockets out.

Each process declares its own exclusive queue on the ``fleetstream.events`` exchange and
binds exactly the routing patterns its connected sockets need (reference-counted), so
any number of replicas each deliver to their own sockets. A message is routed locally
to the subscribers whose pattern matches, into each one's bounded queue; a subscriber
that falls behind is dropped (its socket closed with 1013), never slowing the others.

Catch-up after a reconnect comes from the per-audience replay streams in Redis
(``notify:{scope}``, written by ``streams.publish``): the socket subscribes first,
then reads what came after the client's last id, then delivers live messages whose id
is newer than the last one sent, so nothing is missed and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import aio_pika
import orjson
from prometheus_client import Counter, Gauge

from core.config import Settings
from core.retry import until_connected
from schemas.contracts import EXCHANGE, LOCATIONS_KEY, LOCATIONS_PATTERN, location_key

log = logging.getLogger(__name__)


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` one word, ``#`` zero or more words."""
    p, k = pattern.split("."), key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(match(i + 1, jj) for jj in range(j, len(k) + 1))
        return j < len(k) and (p[i] == "*" or p[i] == k[j]) and match(i + 1, j + 1)

    return match(0, 0)


def _prefix(pattern: str) -> tuple[str, str] | None:
    """The two literal leading words of a ``a.b.#`` pattern, else None."""
    words = pattern.split(".")
    if len(words) == 3 and words[2] == "#" and "*" not in words[:2] and "#" not in words[:2]:
        return words[0], words[1]
    return None


def bound_key(pattern: str) -> str:
    """What to bind on the exchange for a socket's pattern: locations arrive batched."""
    return LOCATIONS_KEY if pattern == LOCATIONS_PATTERN else pattern


def unbatch(key: str, body: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
    """(routing key, body) of each message a received one carries: a location batch is one per driver."""
    if key != LOCATIONS_KEY:
        return [(key, body)]
    locations = body.get("locations")
    if not isinstance(locations, list):
        return []
    return [(location_key(loc["driver_id"]), loc) for loc in locations
            if isinstance(loc, dict) and isinstance(loc.get("driver_id"), str)]  # fmt: skip


def stream_id(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Outbound:
    """A message as every socket sends it: serialised once, whatever the number of sockets."""

    text: str
    id: tuple[int, int] | None  # replay stream id; None for live-only messages (locations)


@dataclass(eq=False)
class Subscriber:
    patterns: list[str]
    queue: asyncio.Queue[Outbound]
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, message: Outbound) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed.set()


SOCKETS = Gauge("fleetstream_notify_sockets", "Notification sockets subscribed (bindings in place) on this process")
DROPPED = Counter("fleetstream_notify_dropped_total", "Notification sockets dropped for reading too slowly")


class NotificationHub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue_name = f"notify.{os.uname().nodename}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._bound: dict[str, int] = defaultdict(int)
        self._subscribers: set[Subscriber] = set()
        # Routing index: "scope.id.#" patterns by their two literal words (one dict lookup per
        # message, whatever the number of sockets); any other pattern is matched one by one.
        self._by_prefix: dict[tuple[str, str], set[Subscriber]] = defaultdict(set)
        self._other: dict[Subscriber, list[str]] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        async def attempt() -> None:
            self._connection = await aio_pika.connect_robust(
                self.settings.rabbitmq_dsn, reconnect_interval=self.settings.rabbitmq_reconnect_s
            )
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=1000)
            self._exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            self._queue = await channel.declare_queue(self.queue_name, exclusive=True, auto_delete=True)
            await self._queue.consume(self._on_message, no_ack=True)

        await until_connected("notification hub", attempt)
        self.ready.set()

    async def stop(self) -> None:
        if self._task and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            await self._connection.close()

    @property
    def connected(self) -> bool:
        return self.ready.is_set() and self._connection is not None and not self._connection.is_closed

    @property
    def sockets(self) -> int:
        return len(self._subscribers)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            body = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict):
            return
        for key, one in unbatch(message.routing_key or "", body):
            self._route(key, one)

    def _route(self, key: str, body: dict[str, object]) -> None:
        body.setdefault("routing_key", key)
        out = Outbound(orjson.dumps(body).decode(), stream_id(str(body["id"])) if "id" in body else None)
        words = key.split(".")
        targets = set(self._by_prefix.get((words[0], words[1]), ())) if len(words) > 1 else set()
        for sub, patterns in self._other.items():
            if any(topic_matches(p, key) for p in patterns):
                targets.add(sub)
        for sub in targets:
            sub.offer(out)

    async def subscribe(self, patterns: list[str], maxsize: int) -> Subscriber:
        await asyncio.wait_for(self.ready.wait(), 10)
        sub = Subscriber(patterns, asyncio.Queue(maxsize))
        async with self._lock:
            for p in map(bound_key, patterns):
                if self._bound[p] == 0:
                    assert self._queue is not None and self._exchange is not None
                    await self._queue.bind(self._exchange, routing_key=p)
                self._bound[p] += 1
            self._subscribers.add(sub)
            SOCKETS.set(len(self._subscribers))
            for p in patterns:
                prefix = _prefix(p)
                if prefix is not None:
                    self._by_prefix[prefix].add(sub)
                else:
                    self._other.setdefault(sub, []).append(p)
        return sub

    async def unsubscribe(self, sub: Subscriber) -> None:
        async with self._lock:
            self._subscribers.discard(sub)
            SOCKETS.set(len(self._subscribers))
            self._other.pop(sub, None)
            for p in sub.patterns:
                prefix = _prefix(p)
                if prefix is not None:
                    subs = self._by_prefix.get(prefix)
                    if subs is not None:
                        subs.discard(sub)
                        if not subs:
                            del self._by_prefix[prefix]
            for p in map(bound_key, sub.patterns):
                self._bound[p] -= 1
                if self._bound[p] == 0:
                    del self._bound[p]
                    if self._queue is not None and self._exchange is not None:
                        with contextlib.suppress(Exception):
                            await self._queue.unbind(self._exchange, routing_key=p)
