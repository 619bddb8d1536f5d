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
from collections import defaultdict, deque
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
    """One socket's messages not yet sent, at most ``maxsize``, and one event that wakes its sender.

    A deque and an event rather than an ``asyncio.Queue`` read through ``asyncio.wait``: an idle
    socket then waits on one future, not two tasks and a queue's three deques (part of the
    memory per idle socket that ``benchmarks/notify.py`` measures).
    """

    patterns: list[str]
    maxsize: int
    pending: deque[Outbound] = field(default_factory=deque)
    overflowed: bool = False
    #: Messages may have been published while RabbitMQ was away (its queue and bindings gone):
    #: the socket fills the gap from its replay stream, from the last id it sent.
    gap: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, message: Outbound) -> None:
        if len(self.pending) >= self.maxsize:
            self.overflowed = True
        else:
            self.pending.append(message)
        self.wake.set()


SOCKETS = Gauge("fleetstream_notify_sockets", "Notification sockets subscribed (bindings in place) on this process")
DROPPED = Counter("fleetstream_notify_dropped_total", "Notification sockets dropped for reading too slowly")


GAPS = Counter("fleetstream_notify_gaps_total", "RabbitMQ reconnects after which the sockets caught up from Redis")
BINDS = Counter("fleetstream_notify_binds_total", "Routing patterns bound on this process's queue (batched)")


class Binder:
    """The queue's bindings, reference-counted, sent in batches on a channel of their own.

    A bind was one RabbitMQ round trip, one after another under a lock: 10,000 sockets
    connecting at once were all subscribed only 22 s later (``benchmarks/notify.py``). Now
    every bind requested meanwhile goes out pipelined (AMQP's no-wait), closed by one that
    waits: a channel's methods are applied in order, so its reply means all are in place,
    and each waiting socket is then subscribed. Unbinding a pattern no socket uses any more
    (``queue.unbind`` always waits) runs only when no bind is waiting, and a pattern wanted
    again before its unbind went out simply stays bound. One task sends everything on one
    channel, so a pattern's bind and unbind reach the broker in the order they were asked.
    """

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.refs: dict[str, int] = defaultdict(int)
        self.bound: set[str] = set()
        self._binds: dict[str, asyncio.Future[None]] = {}  # requested, not yet confirmed
        self._unbinds: dict[str, None] = {}  # an ordered set: unused patterns, unbound when idle
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self.channel = channel
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def acquire(self, patterns: list[str], timeout: float = 10.0) -> None:
        """Once it returns, messages for every pattern reach the queue; TimeoutError if they could not be bound."""
        waits: list[asyncio.Future[None]] = []
        for p in patterns:
            self.refs[p] += 1
            self._unbinds.pop(p, None)  # wanted again before its unbind went out: it stays bound
            if p in self.bound:
                continue
            fut = self._binds.get(p)
            if fut is None:
                fut = self._binds[p] = asyncio.get_running_loop().create_future()
                self._wake.set()
            waits.append(fut)
        try:
            await asyncio.wait_for(asyncio.gather(*(asyncio.shield(f) for f in waits)), timeout)
        except BaseException:
            self.release(patterns)
            raise

    def release(self, patterns: list[str]) -> None:
        for p in patterns:
            self.refs[p] -= 1
            if self.refs[p] <= 0:
                del self.refs[p]
                if p in self.bound:
                    self._unbinds[p] = None
                    self._wake.set()

    def lost(self) -> list[asyncio.Future[None]]:
        """The broker's queue is new (a reconnect): bind again whatever a socket still uses.

        Returns the binds to wait for: once they are done, every message reaches the queue again.
        """
        self._unbinds.clear()
        self.bound.clear()
        for p in self.refs:
            if p not in self._binds:
                self._binds[p] = asyncio.get_running_loop().create_future()
        self._wake.set()
        return list(self._binds.values())

    async def _run(self) -> None:
        delay = 0.2
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._binds or self._unbinds:
                try:
                    await (self._bind_batch() if self._binds else self._unbind_one())
                    delay = 0.2
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the channel is closed (RabbitMQ away): try again, the sockets wait
                    log.warning("notification hub: binding failed (%s); retry in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    async def _bind_batch(self) -> None:
        assert self.channel is not None
        batch, self._binds = self._binds, {}
        ch = await self.channel.get_underlay_channel()
        try:
            *pipelined, last = batch
            for p in pipelined:
                await ch.queue_bind(self.queue_name, EXCHANGE, routing_key=p, nowait=True)
            await ch.queue_bind(self.queue_name, EXCHANGE, routing_key=last)
        except BaseException:
            self._binds = {**batch, **self._binds}  # not sent or not confirmed: _run sends them again
            raise
        self.bound.update(batch)
        BINDS.inc(len(batch))
        for p, fut in batch.items():
            if not fut.done():
                fut.set_result(None)
            if p not in self.refs:  # its sockets left (or gave up) while it was being bound
                self._unbinds[p] = None

    async def _unbind_one(self) -> None:
        assert self.channel is not None
        p = next(iter(self._unbinds))
        del self._unbinds[p]
        if p in self.refs or p not in self.bound:
            return
        self.bound.discard(p)
        ch = await self.channel.get_underlay_channel()
        await ch.queue_unbind(self.queue_name, EXCHANGE, routing_key=p)


class NotificationHub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue_name = f"notify.{os.uname().nodename}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._binder = Binder(self.queue_name)
        self._subscribers: set[Subscriber] = set()
        # Routing index: "scope.id.#" patterns by their two literal words (one dict lookup per
        # message, whatever the number of sockets); any other pattern is matched one by one.
        self._by_prefix: dict[tuple[str, str], set[Subscriber]] = defaultdict(set)
        self._other: dict[Subscriber, list[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._restoring: set[asyncio.Task[None]] = set()
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
            self._binder.start(await self._connection.channel())
            # Restored by aio-pika after a reconnect: the channels and the (new, empty) queue;
            # the bindings are the binder's to send again, and the sockets' gap theirs to fill.
            self._connection.reconnect_callbacks.add(lambda *_: self._restore())

        await until_connected("notification hub", attempt)
        self.ready.set()

    def _restore(self) -> None:
        rebinds = self._binder.lost()
        task = asyncio.create_task(self._after_rebind(rebinds))
        self._restoring.add(task)
        task.add_done_callback(self._restoring.discard)

    async def _after_rebind(self, rebinds: list[asyncio.Future[None]]) -> None:
        """Once the queue's bindings are back, every socket catches up from its replay stream.

        What was published while the queue was gone reached no socket; it is in the replay
        streams (written before RabbitMQ), and a socket skips what it already sent by id.
        """
        await asyncio.gather(*(asyncio.shield(f) for f in rebinds), return_exceptions=True)
        GAPS.inc()
        for sub in self._subscribers:
            sub.gap = True
            sub.wake.set()

    async def stop(self) -> None:
        if self._task and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._binder.stop()
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
        """Routes the patterns' messages to the returned subscriber once their bindings are in place."""
        await asyncio.wait_for(self.ready.wait(), 10)
        sub = Subscriber(patterns, maxsize)
        await self._binder.acquire([bound_key(p) for p in patterns])
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
        if sub not in self._subscribers:
            return
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
        self._binder.release([bound_key(p) for p in sub.patterns])
