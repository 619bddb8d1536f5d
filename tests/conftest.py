"""Fixtures that talk to the real local stack (started here if it is not running)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fleetstream.config import Settings, get_settings

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Settings:
    """The whole stack, healthy, with the project's topics created."""
    from fleetstream.stack import Stack
    from streams.topics import ensure_topics

    Stack(settings).up()
    asyncio.run(ensure_topics(settings))
    return settings


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


class Proc:
    """A project process (worker, API) run as a real subprocess, with its output kept for failures."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = 15, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._out.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    procs: list[Proc] = []

    def _spawn(name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        p = Proc([sys.executable, "-m", "fleetstream.cli", *args], env or {}, tmp_path / f"{name}.log")
        procs.append(p)
        return p

    yield _spawn
    for p in procs:
        p.stop()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@pytest.fixture
async def producer(stack: Settings) -> AsyncIterator[object]:
    from fleetstream.kafka import make_producer

    p = make_producer(stack)
    await p.start()
    yield p
    await p.stop()


class TopicTail:
    """Reads a topic from the offsets it had when created: sees only what a test caused."""

    def __init__(self, settings: Settings, topic: str) -> None:
        from fleetstream.kafka import make_consumer

        self.topic = topic
        self.settings = settings
        self.consumer = make_consumer(settings)

    async def __aenter__(self) -> TopicTail:
        from aiokafka import TopicPartition

        await self.consumer.start()
        from streams.topics import TOPICS, partitions_for

        spec = next(t for t in TOPICS if t.name == self.topic)
        parts = range(partitions_for(spec, self.settings))
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)  # resolve now, before the test produces
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def collect(self, match, count: int = 1, timeout: float = 60.0) -> list[object]:  # type: ignore[no-untyped-def]
        from schemas import decode

        found: list[object] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            batch = await self.consumer.getmany(timeout_ms=300)
            for msgs in batch.values():
                for m in msgs:
                    try:
                        value = decode(m.value)
                    except ValueError:
                        continue
                    if match(value):
                        found.append(value)
        return found
