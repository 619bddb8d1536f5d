"""The cluster profile's Kafka: three KRaft nodes, topics at replication 3 with min.insync.replicas 2.

A partition leader killed with -9 while an idempotent ``acks=all`` producer sends: the
producer goes on once a new leader is elected, and every record it was told was written is
there exactly once. Runs its own three nodes (ports and data of its own), not the stack's.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from core.config import Settings
from core.kafka import make_consumer, make_producer
from fleetstream.stack import Stack
from fleetstream.stack.process import PidRecord
from fleetstream.stack.services import port_open
from schemas.contracts import TELEMETRY_RAW
from streams.topics import ensure_topics

pytestmark = pytest.mark.usefixtures("stack")


def free_block(n: int) -> int:
    """A block of ports free now and below the kernel's ephemeral range.

    Inside that range the nodes' own outgoing connections (to each other, while the later
    ones start) may take a port of the block first: a node then failed to bind its listener.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        base = random.randrange(20_000, max(20_002, low - n), 2)
        if not any(port_open("127.0.0.1", base + i) for i in range(n)):
            return base
    raise RuntimeError("no free block of ports")


@pytest.mark.timeout(400)
def test_a_leader_killed_under_acks_all_loses_no_acknowledged_record(stack: Settings, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(stack.home / "cache")  # the Kafka jars the stack already fetched
    s = Settings(home=home, kafka_profile="cluster", kafka_cluster_port=free_block(6), topic_namespace="cluster")
    assert (s.topic_replication, s.topic_min_insync) == (3, 2)
    cluster = Stack(s, only=["kafka-1", "kafka-2", "kafka-3"])
    assert [svc.name for svc in cluster.services] == ["kafka-1", "kafka-2", "kafka-3"]
    cluster.up()
    try:
        asyncio.run(_scenario(s, cluster))
    finally:
        cluster.down()


async def _scenario(s: Settings, cluster: Stack) -> None:
    topic = s.topic(TELEMETRY_RAW.name)
    await ensure_topics(s, [TELEMETRY_RAW])
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        assert all(len(p["replicas"]) == 3 for p in described["partitions"])
        (configs,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {c[0]: c[1] for c in configs.resources[0][4]}
        assert entries["min.insync.replicas"] == "2"
        leader = next(p["leader"] for p in described["partitions"] if p["partition"] == 0)
    finally:
        await admin.close()

    producer = make_producer(s, request_timeout_ms=30_000)
    await producer.start()
    acked: list[bytes] = []
    failed = 0
    try:
        for chunk in range(30):  # 100 records in flight at a time, awaited together
            values = [f"r{chunk * 100 + j}".encode() for j in range(100)]
            futures = [await producer.send(topic, v, key=f"d{j % 40}".encode()) for j, v in enumerate(values)]
            for value, fut in zip(values, futures, strict=True):
                try:
                    await fut
                    acked.append(value)
                except Exception:
                    failed += 1  # never acknowledged: the client would retry it (seq deduplicates)
            if chunk == 10:  # the leader of partition 0 dies mid-stream, without a goodbye
                svc = next(x for x in cluster.services if x.name == f"kafka-{leader}")
                rec = PidRecord.read(svc.pid_file)
                assert rec is not None
                os.kill(rec.pid, signal.SIGKILL)
                killed_at = time.monotonic()
    finally:
        await producer.stop()
    assert time.monotonic() - killed_at < 120
    assert len(acked) >= 2900, (len(acked), failed)  # the producer went on after the election

    consumer = make_consumer(s)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(s.telemetry_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        seen: list[bytes] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                seen += [m.value for m in msgs if m.value is not None]
            if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                break
    finally:
        await consumer.stop()
    missing = set(acked) - set(seen)
    assert not missing, sorted(missing)[:20]  # nothing acknowledged is lost
    assert len(seen) == len(set(seen)), "a record was written twice"  # the idempotent producer's retries
