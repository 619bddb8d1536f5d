"""The tests' servers from the official images, through testcontainers, where a Docker engine exists.

``make test`` runs the same suite on either of two sets of servers:

- ``local``: the launcher's (``fleetstream stack up``: Kafka from Maven jars, FerretDB for
  MongoDB, Debian's Redis, RabbitMQ and nginx) — the only choice without Docker;
- ``containers``: ``apache/kafka``, ``redis``, ``rabbitmq`` and ``mongo`` 7 as a replica set,
  so MongoDB itself, not FerretDB, is what the suite runs against.

``FLEETSTREAM_TEST_SERVERS`` = ``local`` | ``containers`` forces one; unset or ``auto``
picks containers when a Docker engine answers. Each container publishes its server on one
free host port, the same inside and out, so what a server advertises (Kafka's listener, the
replica set's member) is reachable from the host as it is. nginx stays the local binary.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Servers = Literal["local", "containers"]
ENV = "FLEETSTREAM_TEST_SERVERS"

KAFKA_IMAGE = "apache/kafka:4.1.1"
REDIS_IMAGE = "redis:7.4"
RABBITMQ_IMAGE = "rabbitmq:3.13"
MONGO_IMAGE = "mongo:7.0"
REPLICA_SET = "rs0"
IMAGES = (KAFKA_IMAGE, REDIS_IMAGE, RABBITMQ_IMAGE, MONGO_IMAGE)


def docker_engine(timeout: float = 3.0) -> bool:
    """Whether a Docker engine answers (``DOCKER_HOST`` or the default socket)."""
    try:
        from testcontainers.core.docker_client import DockerClient

        client = DockerClient(timeout=timeout).client
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no client library, no socket, no daemon: all mean "no engine"
        return False


def choose(env: Mapping[str, str], engine: Callable[[], bool] = docker_engine) -> tuple[Servers, str]:
    """The servers to test against, and why (printed at the start of the run)."""
    want = env.get(ENV, "auto").strip().lower() or "auto"
    if want == "local":
        return "local", f"{ENV}=local"
    if want == "containers":
        return "containers", f"{ENV}=containers"
    if want != "auto":
        raise ValueError(f"{ENV} must be local, containers or auto, not {want!r}")
    if engine():
        return "containers", "a Docker engine answers"
    return "local", "no Docker engine here: the local launcher's servers"


@dataclass(frozen=True)
class Container:
    """One server: its image, the host port it is published on (the same inside), env and command."""

    name: str
    image: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None


def containers(ports: Mapping[str, int]) -> list[Container]:
    """The four servers on these host ports (``kafka``, ``redis``, ``rabbitmq``, ``mongo``)."""
    k, r, q, m = ports["kafka"], ports["redis"], ports["rabbitmq"], ports["mongo"]
    kafka_env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://:{k},CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{k}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_NUM_PARTITIONS": "8",
    }
    return [
        Container("kafka", KAFKA_IMAGE, k, kafka_env),
        Container("redis", REDIS_IMAGE, r, command=["redis-server", "--port", str(r), "--appendonly", "yes"]),
        # The image lets guest in from anywhere (loopback_users.guest = false).
        Container("rabbitmq", RABBITMQ_IMAGE, q, {"RABBITMQ_NODE_PORT": str(q)}),
        Container(
            "mongo", MONGO_IMAGE, m, command=["mongod", "--replSet", REPLICA_SET, "--port", str(m), "--bind_ip_all"]
        ),
    ]


def replica_set_config(mongo_port: int) -> dict[str, Any]:
    """One member, named as the host reaches it: the driver connects to what the set reports."""
    return {"_id": REPLICA_SET, "members": [{"_id": 0, "host": f"127.0.0.1:{mongo_port}"}]}


def settings_env(ports: Mapping[str, int], redis_db: int) -> dict[str, str]:
    """What every test process (and its children) is told, instead of the launcher's ports."""
    return {
        "FLEETSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['kafka']}",
        "FLEETSTREAM_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/{redis_db}",
        "FLEETSTREAM_RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{ports['rabbitmq']}/",
        "FLEETSTREAM_MONGO_URL": f"mongodb://127.0.0.1:{ports['mongo']}/?replicaSet={REPLICA_SET}&w=majority",
    }


class Running:
    """The containers of :func:`containers`, started and healthy; ``stop`` removes them."""

    def __init__(self, ports: Mapping[str, int]) -> None:
        self.ports = dict(ports)
        self._started: list[Any] = []

    def start(self, timeout: float = 180) -> None:
        from testcontainers.core.container import DockerContainer

        for spec in containers(self.ports):
            c = DockerContainer(spec.image).with_bind_ports(spec.port, spec.port)
            for key, value in spec.env.items():
                c = c.with_env(key, value)
            if spec.command is not None:
                c = c.with_command(spec.command)
            c.start()
            self._started.append(c)
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        import asyncio
        import time

        import pymongo
        import redis

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.ports["redis"], socket_timeout=2).ping()
                mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                    port=self.ports["mongo"], directConnection=True, serverSelectionTimeoutMS=2000
                )
                try:
                    try:
                        mongo.admin.command("replSetGetStatus")
                    except pymongo.errors.OperationFailure:  # not yet a replica set
                        mongo.admin.command("replSetInitiate", replica_set_config(self.ports["mongo"]))
                    if not mongo.admin.command("hello").get("isWritablePrimary"):
                        raise RuntimeError("the replica set has no primary yet")
                finally:
                    mongo.close()
                asyncio.run(self._kafka_and_rabbitmq())
                return
            except Exception as exc:  # a server still booting
                last = exc
                time.sleep(1)
        raise RuntimeError(f"the test containers did not become healthy in {timeout:.0f}s: {last!r}")

    async def _kafka_and_rabbitmq(self) -> None:
        import aio_pika
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{self.ports['kafka']}")
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()
        conn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{self.ports['rabbitmq']}/")
        await conn.close()

    def stop(self) -> None:
        for c in reversed(self._started):
            with contextlib.suppress(Exception):  # already gone: nothing left to remove
                c.stop()
        self._started.clear()
