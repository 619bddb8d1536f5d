"""Which servers a run uses, and the containers' settings (fleetstream/stack/containers.py).

The containers path itself needs a Docker engine, which this machine lacks: here these check
the choice and what each container and test process would be told, not a running container.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from core.config import Settings
from fleetstream.stack.containers import (
    ENV,
    IMAGES,
    choose,
    containers,
    docker_engine,
    replica_set_config,
    settings_env,
)
from tests.conftest import REPO

PORTS = {"kafka": 31001, "redis": 31002, "rabbitmq": 31003, "mongo": 31004}


def _never() -> bool:
    raise AssertionError("a forced choice must not probe for an engine")


def test_the_choice_is_automatic_and_the_environment_forces_either() -> None:
    assert choose({}, lambda: True)[0] == "containers"
    assert choose({}, lambda: False) == ("local", "no Docker engine here: the local launcher's servers")
    assert choose({ENV: "auto"}, lambda: True)[0] == "containers"
    assert choose({ENV: ""}, lambda: False)[0] == "local"
    assert choose({ENV: "local"}, _never) == ("local", f"{ENV}=local")
    assert choose({ENV: " Containers "}, _never) == ("containers", f"{ENV}=containers")
    with pytest.raises(ValueError, match="local, containers or auto"):
        choose({ENV: "docker"}, lambda: True)


def test_the_engine_probe_answers_quickly_without_a_daemon() -> None:
    t0 = time.monotonic()
    answer = docker_engine(timeout=2)
    assert isinstance(answer, bool) and time.monotonic() - t0 < 10
    if not os.path.exists("/var/run/docker.sock") and "DOCKER_HOST" not in os.environ:
        assert answer is False  # this machine: no engine, so the local launcher runs


def test_each_container_is_an_official_image_on_its_own_port_the_same_inside_and_out() -> None:
    specs = {c.name: c for c in containers(PORTS)}
    assert set(specs) == set(PORTS)
    assert {c.image.split(":")[0] for c in specs.values()} == {"apache/kafka", "redis", "rabbitmq", "mongo"}
    assert tuple(c.image for c in specs.values()) == IMAGES
    assert specs["mongo"].image == "mongo:7.0"
    assert {c.port for c in specs.values()} == set(PORTS.values())
    kafka = specs["kafka"].env
    assert kafka["KAFKA_LISTENERS"].startswith(f"PLAINTEXT://:{PORTS['kafka']},")
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://127.0.0.1:{PORTS['kafka']}"  # what the host reaches
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # `fleetstream topics` declares them, as here
    mongo = specs["mongo"].command or []
    assert mongo[mongo.index("--replSet") + 1] == "rs0" and mongo[mongo.index("--port") + 1] == str(PORTS["mongo"])
    redis = specs["redis"].command or []
    assert redis[redis.index("--port") + 1] == str(PORTS["redis"])
    assert specs["rabbitmq"].env == {"RABBITMQ_NODE_PORT": str(PORTS["rabbitmq"])}
    assert replica_set_config(PORTS["mongo"]) == {"_id": "rs0", "members": [{"_id": 0, "host": "127.0.0.1:31004"}]}


def test_test_processes_are_pointed_at_the_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in settings_env(PORTS, redis_db=1).items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.kafka_servers == "127.0.0.1:31001"
    assert s.redis_dsn == "redis://127.0.0.1:31002/1"  # the tests' own database, as on the local path
    assert s.rabbitmq_dsn.startswith("amqp://guest:guest@127.0.0.1:31003")
    mongo = urlsplit(s.mongo_dsn)
    assert mongo.netloc == "127.0.0.1:31004"
    assert parse_qs(mongo.query) == {"replicaSet": ["rs0"], "w": ["majority"]}


def test_the_run_says_which_servers_it_uses() -> None:
    env = {**os.environ, ENV: "local"}
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "tests/test_lock.py"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    want = f"servers: the local launcher's (Kafka from Maven jars, FerretDB, Redis, RabbitMQ, nginx) ({ENV}=local)"
    assert want in out.stdout.splitlines()[:5], out.stdout[:1000]
