"""Connections an API process holds for its lifetime (one pool each, opened at start-up).

The API starts even when Kafka is down: the producer connects in the background and
ingest answers 503 with ``Retry-After`` until it is up, instead of the process dying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from api.accounts import Accounts
from api.auth import Authenticator
from api.limits import ReadLimiter
from api.notify import NotificationHub
from core.clients import redis_client
from core.config import Settings
from core.kafka import make_producer
from core.retry import until_connected
from sinks.mongo import ensure_indexes

log = logging.getLogger(__name__)


@dataclass
class KafkaGate:
    """The shared producer, plus whether it is connected right now."""

    settings: Settings
    producer: AIOKafkaProducer | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.producer is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        async def attempt() -> None:
            producer = make_producer(self.settings, request_timeout_ms=int(self.settings.ingest_timeout_s * 1000))
            try:
                await producer.start()
            except Exception:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self.producer = producer

        await until_connected("kafka producer", attempt)

    async def stop(self) -> None:
        if self._task and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.producer is not None:
            await self.producer.stop()


@dataclass
class Resources:
    settings: Settings
    kafka: KafkaGate
    redis: aioredis.Redis
    mongo: AsyncIOMotorClient
    db: AsyncIOMotorDatabase
    auth: Authenticator
    hub: NotificationHub
    accounts: Accounts
    reads: ReadLimiter
    #: The servers this process's services need (``api.services``): only those are connected and checked.
    pools: frozenset[str] = frozenset({"kafka", "redis", "mongo", "rabbitmq"})

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, pools: frozenset[str] | None = None) -> AsyncIterator[Resources]:
        """Clients of every server; connections only to ``pools`` (Redis and MongoDB clients connect lazily)."""
        pools = pools if pools is not None else cls.pools
        kafka = KafkaGate(settings)
        if "kafka" in pools:
            kafka.start()
        redis = redis_client(settings.redis_dsn, max_connections=512)
        mongo: AsyncIOMotorClient = AsyncIOMotorClient(
            settings.mongo_dsn, tz_aware=True, serverSelectionTimeoutMS=5000,
            socketTimeoutMS=int(settings.mongo_socket_timeout_s * 1000),
        )  # fmt: skip
        db = mongo[settings.mongo_db]
        if "mongo" in pools:
            try:
                await ensure_indexes(db)
            except Exception as exc:  # the API still serves what does not need MongoDB
                log.warning("could not ensure MongoDB indexes at start-up: %s", exc)
        hub = NotificationHub(settings)
        if "rabbitmq" in pools:
            hub.start()
        auth = Authenticator(settings, db, redis)
        revocations = asyncio.create_task(auth.listen_for_revocations())
        try:
            yield cls(
                settings,
                kafka,
                redis,
                mongo,
                db,
                auth,
                hub,
                Accounts(db, redis, settings),
                ReadLimiter(redis, settings.read_limit, settings.read_window_s),
                pools,
            )
        finally:
            revocations.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await revocations
            await hub.stop()
            await kafka.stop()
            await redis.aclose()
            mongo.close()
