"""Clients a worker opens once, lazily, inside its running event loop."""

from __future__ import annotations

import aio_pika
import redis.asyncio as aioredis
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from core.clients import redis_client
from core.config import Settings, get_settings

_settings: Settings | None = None
_redis: aioredis.Redis | None = None
_mongo: AsyncIOMotorClient | None = None
_rabbit: aio_pika.abc.AbstractRobustConnection | None = None


def configure(settings: Settings) -> None:
    """The settings this process's clients connect with: the worker's, handed in by ``streams.worker.build``."""
    global _settings
    _settings = settings


def _s() -> Settings:
    return _settings if _settings is not None else get_settings()


def redis() -> aioredis.Redis:
    global _redis
    if _redis is None:
        _redis = redis_client(_s().redis_dsn, max_connections=64)
    return _redis


def db() -> AsyncIOMotorDatabase:
    global _mongo
    if _mongo is None:
        s = _s()
        _mongo = AsyncIOMotorClient(s.mongo_dsn, tz_aware=True, serverSelectionTimeoutMS=10_000,
                                    socketTimeoutMS=int(s.mongo_socket_timeout_s * 1000))  # fmt: skip
    return _mongo[_s().mongo_db]


async def rabbit() -> aio_pika.abc.AbstractRobustConnection:
    global _rabbit
    if _rabbit is None or _rabbit.is_closed:
        _rabbit = await aio_pika.connect_robust(_s().rabbitmq_dsn, reconnect_interval=_s().rabbitmq_reconnect_s)
    return _rabbit
