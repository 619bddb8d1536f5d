"""Connections an API process holds for its lifetime (one pool each, opened at start-up)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from fleetstream.config import Settings
from fleetstream.kafka import make_producer


@dataclass
class Resources:
    settings: Settings
    producer: AIOKafkaProducer
    redis: aioredis.Redis
    mongo: AsyncIOMotorClient
    db: AsyncIOMotorDatabase

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[Resources]:
        producer = make_producer(settings)
        await producer.start()
        redis = aioredis.from_url(settings.redis_dsn, decode_responses=False, max_connections=256)
        mongo: AsyncIOMotorClient = AsyncIOMotorClient(settings.mongo_dsn, tz_aware=True, serverSelectionTimeoutMS=5000)
        try:
            yield cls(settings, producer, redis, mongo, mongo[settings.mongo_db])
        finally:
            await producer.stop()
            await redis.aclose()
            mongo.close()
