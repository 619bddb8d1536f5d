"""The example agent package (examples/harsh_braking), installed, in a real worker on Kafka; scaffold and backtest."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from core.config import Settings
from schemas import GpsPing, TelemetryBatch, encode
from tests.conftest import Pipeline

pytestmark = pytest.mark.usefixtures("stack")


def braking(driver: str, t0: datetime) -> list[TelemetryBatch]:
    speeds = [20.0, 20.0, 10.0, 2.0]  # two harsh decelerations, 1 s apart
    return [TelemetryBatch(driver_id=driver, pings=[GpsPing(driver_id=driver, seq=i, ts=t0 + timedelta(seconds=i),
                                                            lat=52.5, lon=13.4 + i * 1e-4, speed_mps=v)])
            for i, v in enumerate(speeds)]  # fmt: skip


async def test_the_example_agent_runs_in_a_worker_and_its_events_arrive(stack: Settings, tmp_path, producer,  # type: ignore[no-untyped-def]
                                                                        uid: str) -> None:  # fmt: skip
    from harsh_braking import HarshBraking, agent

    from core.kafka import make_consumer

    driver = f"hb-{uid}"
    p = Pipeline(stack, tmp_path, f"test-sdk-{uid}")
    p.env["FLEETSTREAM_AGENTS"] = "clean,harsh_braking"  # a built-in name and an installed one
    topic = stack.topic(agent.topic.name)
    consumer = make_consumer(stack)
    found: list[HarshBraking] = []
    try:
        p.start_worker()  # creates the agent's topic before it starts
        await consumer.start()
        tps = [TopicPartition(topic, i) for i in range(stack.telemetry_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        for b in braking(driver, datetime.now(UTC) - timedelta(minutes=5)):
            await producer.send_and_wait(stack.topic("telemetry.raw"), encode(b), key=driver.encode())
        deadline = time.monotonic() + 30  # by the clock: a getmany may return at once
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                found += [e for m in msgs if (e := HarshBraking.model_validate_json(m.value)).driver_id == driver]
            if len(found) >= 2:
                break
    finally:
        await consumer.stop()
        p.stop()
    assert [(e.from_mps, e.to_mps) for e in found] == [(20.0, 10.0), (10.0, 2.0)], p.worker.output()[-3000:]


async def test_a_backtest_reports_what_the_agent_would_have_emitted(stack: Settings, producer, uid: str) -> None:  # type: ignore[no-untyped-def]
    from harsh_braking import agent

    from streams.sdk.backtest import backtest

    driver = f"bt-{uid}"
    start = datetime.now(UTC) - timedelta(seconds=1)
    for b in braking(driver, start - timedelta(minutes=5)):
        await producer.send_and_wait(stack.topic("telemetry.clean"), encode(b), key=driver.encode())
    report = await backtest(agent, stack, start, datetime.now(UTC) + timedelta(seconds=1))
    mine = [e for e in report.emitted if e.driver_id == driver]
    assert [(e.from_mps, e.to_mps) for e in mine] == [(20.0, 10.0), (10.0, 2.0)]
    assert report.records >= 4


def test_a_scaffolded_agent_package_passes_its_own_test(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "fleetstream.cli"]
    made = subprocess.run([*cli, "agent", "new", "overspeed", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    root = tmp_path / "overspeed"
    assert 'overspeed = "overspeed:agent"' in (root / "pyproject.toml").read_text()
    env = {**os.environ, "PYTHONPATH": str(root)}
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                         cwd=root, capture_output=True, text=True, env=env)  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "1 passed" in ran.stdout
