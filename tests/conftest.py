"""Fixtures that talk to the real local stack (started here if it is not running)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.config import Settings, get_settings
from fleetstream.stack.containers import IMAGES, Running, Servers, choose, settings_env
from fleetstream.stack.process import wait_until as wait_for

REPO = Path(__file__).resolve().parent.parent

# Each run writes MongoDB history into its own database, dropped at the end: FerretDB's
# lookups grow with collection size, so a developer machine's accumulated demo history
# would otherwise slow these tests down run after run. Subprocesses inherit it.
os.environ.setdefault("FLEETSTREAM_MONGO_DB", f"test_{uuid.uuid4().hex[:8]}")
# Topics of their own: a demo's consumer groups on this machine never process what tests wrote.
os.environ.setdefault("FLEETSTREAM_TOPIC_NAMESPACE", "test")
# And a Redis database of their own: the demo's matcher must not claim a test's bookings.
os.environ.setdefault("FLEETSTREAM_REDIS_DB", "1")
# History buckets stay open 1 s (10 s by default): tests read history soon after posting, and
# the crash tests still replay into buckets that hold several records.
os.environ.setdefault("FLEETSTREAM_HISTORY_FLUSH_S", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The servers of this run: the local launcher's, or containers of the official images where a
# Docker engine answers (FLEETSTREAM_TEST_SERVERS forces either; fleetstream/stack/containers.py).
SERVERS: Servers = "local"
_CONTAINERS: Running | None = None
_WHY = ""


def pytest_configure(config: pytest.Config) -> None:
    global SERVERS, _CONTAINERS, _WHY
    SERVERS, _WHY = choose(os.environ)
    if SERVERS == "containers":
        ports = {name: free_port() for name in ("kafka", "redis", "rabbitmq", "mongo")}
        _CONTAINERS = Running(ports)
        _CONTAINERS.start()
        os.environ.update(settings_env(ports, int(os.environ["FLEETSTREAM_REDIS_DB"])))  # children inherit it
        get_settings.cache_clear()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _CONTAINERS is not None:
        _CONTAINERS.stop()


def pytest_report_header(config: pytest.Config) -> str:
    if SERVERS == "containers":
        return f"servers: containers of {', '.join(IMAGES)}, MongoDB a replica set ({_WHY})"
    return f"servers: the local launcher's (Kafka from Maven jars, FerretDB, Redis, RabbitMQ, nginx) ({_WHY})"


@pytest.fixture
def launcher() -> None:
    """For tests that restart the launcher's own servers or run it (``fleetstream stack``, the demo)."""
    if SERVERS != "local":
        pytest.skip("restarts or runs the local launcher's servers; this run uses containers")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the shared stack is marked ``stack``: ``pytest -m "not stack"`` runs the others."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    """The whole stack, healthy, with the project's topics created."""
    from fleetstream.stack import Stack
    from streams.topics import ensure_topics

    if SERVERS == "local":
        Stack(settings).up()
    asyncio.run(ensure_topics(settings))
    yield settings
    if settings.mongo_db.startswith("test_"):
        asyncio.run(_drop_database(settings))


async def _drop_database(settings: Settings) -> None:
    from motor.motor_asyncio import AsyncIOMotorClient

    client: AsyncIOMotorClient = AsyncIOMotorClient(settings.mongo_dsn)
    try:
        await client.drop_database(settings.mongo_db)
    finally:
        client.close()


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


@pytest.fixture
async def producer(stack: Settings) -> AsyncIterator[object]:
    from core.kafka import make_producer

    p = make_producer(stack)
    await p.start()
    yield p
    await p.stop()


class TopicTail:
    """Reads a topic from the offsets it had when created: sees only what a test caused."""

    def __init__(self, settings: Settings, topic: str) -> None:
        from core.kafka import make_consumer

        self.topic = topic
        self.settings = settings
        self.consumer = make_consumer(settings)

    async def __aenter__(self) -> TopicTail:
        from aiokafka import TopicPartition

        await self.consumer.start()
        from streams.topics import TOPICS, partitions_for

        spec = next(t for t in TOPICS if t.name == self.topic)
        parts = range(partitions_for(spec, self.settings))
        tps = [TopicPartition(self.settings.topic(self.topic), p) for p in sorted(parts)]
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
        seen: set[object] = set()
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            batch = await self.consumer.getmany(timeout_ms=300)
            for msgs in batch.values():
                for m in msgs:
                    try:
                        value = decode(m.value)
                    except ValueError:
                        continue
                    # Consumers dedupe by event id (several workers may emit the same derived event).
                    eid = getattr(value, "event_id", None)
                    if match(value) and eid not in seen:
                        seen.add(eid)
                        found.append(value)
        return found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register_and_login(c: object, email: str, password: str, name: str = "T") -> dict[str, str]:
    """A new account's tokens (``c``: an httpx.AsyncClient on an API serving auth)."""
    import httpx

    assert isinstance(c, httpx.AsyncClient)
    r = await c.post("/v1/auth/register", json={"email": email, "password": password, "name": name})
    assert r.status_code == 201, r.text
    r = await c.post("/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return dict(r.json())


class Pipeline:
    """A worker and an API of the project, as real processes on the local stack."""

    def __init__(self, settings: Settings, tmp: Path, app_id: str, **env: str) -> None:
        self.settings = settings
        self.tmp = tmp
        self.api_port = free_port()
        self.web_port = free_port()
        self.env = {
            "FLEETSTREAM_APP_ID": app_id,
            "FLEETSTREAM_WORKER_WEB_PORT": str(self.web_port),
            **env,
        }
        self.worker: Proc | None = None
        self.api: Proc | None = None
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.admin = ""

    def start_worker(self) -> Proc:
        if not list(self.tmp.glob("worker*.log")):
            # In a thread: callers may be async tests with a running loop.
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, start_group_at_end(self.settings, self.env["FLEETSTREAM_APP_ID"])).result()
        n = len(list(self.tmp.glob("worker*.log")))
        self.worker = Proc([sys.executable, "-m", "fleetstream.cli", "worker"], self.env, self.tmp / f"worker{n}.log")
        ok = wait_for(lambda: _status(f"http://127.0.0.1:{self.web_port}/ready") == 200, 120, 0.5)
        assert ok, self.worker.output()[-4000:]
        return self.worker

    def start_api(self) -> Proc:
        self.api = Proc(
            [sys.executable, "-m", "fleetstream.cli", "api", "--port", str(self.api_port)],
            self.env,
            self.tmp / "api.log",
        )
        assert wait_for(lambda: _status(f"{self.url}/readyz") == 200, 60, 0.3), self.api.output()[-4000:]
        from api.security import admin_token

        self.admin = admin_token(self.settings)
        return self.api

    def stop(self) -> None:
        for p in (self.worker, self.api):
            if p is not None:
                p.stop()

    def running(self, worker: bool = True) -> Iterator[Pipeline]:
        """Start (worker and) API, yield, stop: the body of the module fixtures."""
        try:
            if worker:
                self.start_worker()
            self.start_api()
            yield self
        finally:
            self.stop()

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def device_token(self, driver: str) -> str:
        import httpx

        r = httpx.post(f"{self.url}/v1/drivers/{driver}/devices", headers=self.headers(self.admin), timeout=10)
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


async def start_group_at_end(settings: Settings, group: str) -> None:
    """Commit the end offsets of every project topic for a new consumer group.

    A test worker then sees only what its test produces instead of replaying the history
    of every earlier run (and "latest" is not reliable for a group Faust has never seen).
    """
    from aiokafka import TopicPartition

    from core.kafka import make_consumer
    from streams.topics import TOPICS, partitions_for

    consumer = make_consumer(settings, group_id=group)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic(t.name), p) for t in TOPICS for p in range(partitions_for(t, settings))]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: off for tp, off in ends.items()})
    finally:
        await consumer.stop()


def _status(url: str) -> int:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture(scope="module")
def pipeline(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Worker + API for a test module: fresh consumer group, short offline timeout, no token cache."""
    p = Pipeline(
        stack,
        tmp_path_factory.mktemp("pipeline"),
        f"test-{uuid.uuid4().hex[:8]}",
        FLEETSTREAM_OFFLINE_AFTER_S="4",
        FLEETSTREAM_OFFLINE_CHECK_S="0.5",
        FLEETSTREAM_DEVICE_TOKEN_CACHE_S="0",
        FLEETSTREAM_LOCATION_PUBLISH_INTERVAL_S="0",
        FLEETSTREAM_DRIVER_PERSIST_INTERVAL_S="0",
    )
    yield from p.running()
