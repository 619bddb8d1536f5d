"""Running an agent over retained history: what it would have emitted, touching nothing live.

It reads the agent's source topic between two instants with a plain Kafka consumer that
has no consumer group (so it commits nothing and takes no partitions from a worker),
feeds the records, partition by partition in offset order, to the in-memory harness, and
writes nothing anywhere: the report (and ``--out``) is the result. State starts empty at
``start``, as it would for an agent deployed then.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from core.config import Settings
from schemas import decode
from streams.sdk.agent import Agent
from streams.sdk.testing import Harness
from streams.topics import partitions_for


@dataclass
class Report:
    """What a backtest read and what the agent emitted."""

    agent: str
    records: int = 0
    skipped: int = 0  # undecodable, or not the source's model
    dead_letters: int = 0
    emitted: list[Any] = field(default_factory=list)
    counts: dict[str, float] = field(default_factory=dict)

    def by_type(self) -> dict[str, int]:
        return dict(Counter(str(getattr(e, "type", type(e).__name__)) for e in self.emitted))


async def backtest(agent: Agent[Any, Any], settings: Settings, start: datetime, end: datetime,
                   max_records: int | None = None) -> Report:  # fmt: skip
    """Replay ``agent``'s source topic over [start, end) through the harness."""
    topic = settings.topic(agent.source.topic.name)
    tps = [TopicPartition(topic, p) for p in range(partitions_for(agent.source.topic, settings))]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")  # fmt: skip
    report = Report(agent.name)
    harness = Harness(agent)
    await consumer.start()
    try:
        consumer.assign(tps)
        firsts = await consumer.offsets_for_times({tp: int(start.timestamp() * 1000) for tp in tps})
        lasts = await consumer.offsets_for_times({tp: int(end.timestamp() * 1000) for tp in tps})
        ends = await consumer.end_offsets(tps)
        stop: dict[TopicPartition, int] = {}  # partition → first offset past ``end``
        for tp in tps:
            first, last = firsts.get(tp), lasts.get(tp)
            stop_at = last.offset if last is not None else ends[tp]
            if first is not None and first.offset < stop_at:
                consumer.seek(tp, first.offset)
                stop[tp] = stop_at
            else:
                consumer.pause(tp)
        while stop and (max_records is None or report.records < max_records):
            batch = await consumer.getmany(*stop, timeout_ms=1000, max_records=2000)
            for tp, msgs in batch.items():
                for m in msgs:
                    if m.offset < stop.get(tp, -1):
                        report.records += 1
                        _feed(harness, report, agent, m.value)
            for tp in list(stop):
                if await consumer.position(tp) >= stop[tp]:
                    del stop[tp]
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    report.emitted = harness.emitted
    report.counts = harness.counts
    report.dead_letters = len(harness.dead_letters)
    return report


def _feed(harness: Harness[Any, Any], report: Report, agent: Agent[Any, Any], raw: bytes | None) -> None:
    try:
        value = decode(raw or b"")
    except ValueError:
        report.skipped += 1
        return
    if not isinstance(value, agent.source.model):
        report.skipped += 1
        return
    harness.send(value)
