"""aiokafka clients configured once from settings, shared by the API, sinks and tools."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.config import Settings


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """Batched, compressed and ``acks=all``: a send only succeeds once the broker has it."""
    opts: dict[str, object] = {
        "bootstrap_servers": settings.kafka_servers,
        "acks": "all",
        "linger_ms": settings.producer_linger_ms,
        "compression_type": settings.producer_compression,
        "max_batch_size": 512 * 1024,
        "request_timeout_ms": 10_000,
        "enable_idempotence": True,
    }
    opts.update(overrides)
    return AIOKafkaProducer(**opts)


def make_consumer(settings: Settings, *topics: str, **overrides: object) -> AIOKafkaConsumer:
    opts: dict[str, object] = {
        "bootstrap_servers": settings.kafka_servers,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
    }
    opts.update(overrides)
    return AIOKafkaConsumer(*topics, **opts)
