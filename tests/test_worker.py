"""A real Faust worker (``fleetstream worker`` subprocess) on the local Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleetstream.config import Settings
from schemas import DeadLetter, DriverStatusEvent, GpsPing, TelemetryBatch, encode
from tests.conftest import TopicTail, free_port

pytestmark = pytest.mark.usefixtures("stack")


def batch(driver: str, seq0: int, ts: datetime, n: int = 3) -> TelemetryBatch:
    return TelemetryBatch(
        driver_id=driver,
        pings=[
            GpsPing(driver_id=driver, seq=seq0 + i, ts=ts + timedelta(seconds=i), lat=52.5 + i * 1e-4, lon=13.4)
            for i in range(n)
        ],
    )


async def test_worker_updates_table_and_emits_status(stack: Settings, spawn, producer, uid: str) -> None:  # type: ignore[no-untyped-def]
    driver = f"w-{uid}"
    env = {"FLEETSTREAM_APP_ID": f"test-{uid}", "FLEETSTREAM_WORKER_WEB_PORT": str(free_port())}
    worker = spawn("worker", "worker", "--agents", "presence", env=env)
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    async with TopicTail(stack, "drivers.status") as status, TopicTail(stack, "telemetry.dlq") as dlq:
        key = driver.encode()
        await producer.send_and_wait("telemetry.raw", b'{"type": "telemetry.batch", "driver_id": 42', key=key)
        await producer.send_and_wait("telemetry.raw", encode(batch(driver, 0, t0)), key=key)
        # Same driver again shortly after: already online, so the table suppresses a second event.
        await producer.send_and_wait("telemetry.raw", encode(batch(driver, 3, t0 + timedelta(seconds=5))), key=key)
        # After a silence longer than the offline timeout the driver comes online again.
        later = t0 + timedelta(seconds=stack.offline_after_s + 120)
        await producer.send_and_wait("telemetry.raw", encode(batch(driver, 6, later)), key=key)

        def mine(v: object) -> bool:
            return isinstance(v, DriverStatusEvent) and v.driver_id == driver

        seen = await status.collect(mine, count=2, timeout=90)
        seen += await status.collect(mine, count=1, timeout=5)  # no third event may follow
        dead = await dlq.collect(lambda v: isinstance(v, DeadLetter) and v.key == driver, timeout=30)
    assert worker.popen.poll() is None, worker.output()[-3000:]
    # Other workers (a running demo) may emit too; derived ids are deterministic, so dedupe by id.
    events = list({e.event_id: e for e in seen}.values())
    assert len(events) == 2, worker.output()[-3000:]
    first, second = events
    assert first.previous is None and first.status == "online"
    assert first.last_seen == t0 + timedelta(seconds=2)
    assert second.previous == "offline"
    assert second.last_seen == later + timedelta(seconds=2)
    assert len(dead) == 1 and dead[0].reason == "undecodable" and dead[0].source_topic == "telemetry.raw"
    assert '"driver_id": 42' in dead[0].payload
