"""Creating the project's topics (``schemas.contracts.TOPICS``) and the tables' changelogs.

Broker-side auto-creation is off, so this is the only place a topic comes from
(``fleetstream topics``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from core.config import Settings
from schemas.contracts import TOPICS, Topic


def partitions_for(spec: Topic[Any], settings: Settings) -> int:
    return settings.telemetry_partitions if spec.key == "driver_id" else settings.default_partitions


def durability(settings: Settings) -> dict[str, str]:
    """With ``acks=all``, a send is acknowledged once ``min.insync.replicas`` brokers have it."""
    return {"min.insync.replicas": str(settings.topic_min_insync)} if settings.topic_replication > 1 else {}


async def ensure_topics(settings: Settings, topics: Sequence[Topic[Any]] = TOPICS) -> list[str]:
    """Create missing topics, grow under-partitioned ones; never shrink or drop anything."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, request_timeout_ms=15000)
    await admin.start()
    report: list[str] = []
    try:
        existing = set(await admin.list_topics())
        name = settings.topic
        missing = [t for t in topics if name(t.name) not in existing]
        if missing:
            cfg = {t.name: {**t.kafka_config(), **durability(settings)} for t in missing}
            rf = settings.topic_replication
            new = [NewTopic(name(t.name), partitions_for(t, settings), rf, topic_configs=cfg[t.name]) for t in missing]
            await admin.create_topics(new)
            report += [f"created {name(t.name)} ({partitions_for(t, settings)} partitions)" for t in missing]
        present = [t for t in topics if name(t.name) in existing]
        if present:
            described = await admin.describe_topics([name(t.name) for t in present])
            counts = {d["topic"]: len(d["partitions"]) for d in described}
            for t in present:
                want, have = partitions_for(t, settings), counts.get(name(t.name), 0)
                if have < want:
                    await admin.create_partitions({name(t.name): NewPartitions(want)})
                    report.append(f"grew {name(t.name)} from {have} to {want} partitions")
                else:
                    report.append(f"ok {name(t.name)} ({have} partitions)")
    finally:
        await admin.close()
    return report


async def ensure_changelogs(names: dict[str, int], settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the Faust tables' changelog topics (name → partitions, compacted) before the worker starts.

    Faust creates them itself at start-up but then checks their partitions against its
    consumer's metadata, which may not know the new topic yet: the table's agent crashed
    with ``PartitionsMismatch`` ("the changelog topic has 0 partitions") and the worker ran
    on without it (seen in CI on a fresh app id). Made here, before the consumer exists, its
    first metadata has them.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = {n: p for n, p in names.items() if n not in existing}
        for name, partitions in missing.items():
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker of the group made it first
                cfg = {"cleanup.policy": "compact", **durability(settings)}
                new = NewTopic(name, partitions, settings.topic_replication, topic_configs=cfg)
                await admin.create_topics([new])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while missing and loop.time() < deadline:
            described = await admin.describe_topics(list(missing))
            if all(len(d.get("partitions") or []) == missing[d["topic"]] for d in described):
                break
            await asyncio.sleep(0.2)
        return [f"created {n} ({p} partitions)" for n, p in missing.items()]
    finally:
        await admin.close()
