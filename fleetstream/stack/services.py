"""How to install, start and probe each server of the local stack.

Each service knows three things: how to get its software onto a clean Debian
machine (apt, Maven Central, the Go module proxy), how to start it in the
foreground on 127.0.0.1 with data and logs under ``$FLEETSTREAM_HOME``, and how
to tell that it really answers (a protocol-level probe, not an open port).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.config import REPO_ROOT, Settings

DEPLOY_LOCAL = REPO_ROOT / "deploy" / "local"


class StackError(RuntimeError):
    """A service could not be installed or started; the message names it and its log."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run(args: list[str], what: str, log: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run an install step to completion, keeping its output in ``log`` for the error message."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(args)}\n".encode())
        out.flush()
        proc = subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, **(env or {})}, check=False
        )
    if proc.returncode != 0:
        raise StackError(f"{what} failed (exit {proc.returncode}); see {log}")


@dataclass
class Service:
    """One server process of the stack."""

    name: str
    port: int
    settings: Settings
    start_timeout: float = 60.0

    # --- paths
    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def data_dir(self) -> Path:
        return self.home / "data" / self.name

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / f"{self.name}.pid"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    # --- lifecycle hooks
    def missing_apt_packages(self) -> list[str]:
        return []

    def install(self) -> None:
        """Fetch or build what apt does not provide (apt is batched by the manager)."""

    def prepare(self) -> None:
        """Write config files and one-time initialisation before each start."""

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError


def _which_missing(binaries: dict[str, str]) -> list[str]:
    return [pkg for binary, pkg in binaries.items() if shutil.which(binary) is None]


class Redis(Service):
    def missing_apt_packages(self) -> list[str]:
        return _which_missing({"redis-server": "redis-server"})

    def command(self) -> tuple[list[str], dict[str, str]]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            "redis-server",
            "--bind", self.settings.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "no",
        ], {}  # fmt: skip

    def healthy(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host=self.settings.host, port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False


class Epmd(Service):
    """Erlang port mapper, started by us in the foreground so that ``down`` can stop it."""

    def missing_apt_packages(self) -> list[str]:
        return _which_missing({"epmd": "erlang-base"})

    def command(self) -> tuple[list[str], dict[str, str]]:
        return ["epmd", "-address", self.settings.host, "-port", str(self.port)], {}

    def healthy(self) -> bool:
        return port_open(self.settings.host, self.port)


class RabbitMQ(Service):
    def missing_apt_packages(self) -> list[str]:
        return [] if Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists() else ["rabbitmq-server"]

    def prepare(self) -> None:
        base = self.data_dir
        (base / "home").mkdir(parents=True, exist_ok=True)
        (base / "mnesia").mkdir(parents=True, exist_ok=True)
        (base / "log").mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.settings.host}:{self.port}\n"
            "disk_free_limit.absolute = 50MB\n"
            "log.console = true\nlog.console.level = warning\nlog.file = false\n"
        )
        (base / "enabled_plugins").write_text("[].\n")

    def command(self) -> tuple[list[str], dict[str, str]]:
        base = self.data_dir
        env = {
            "HOME": str(base / "home"),  # the Erlang cookie lives here, not in root's home
            "RABBITMQ_NODENAME": "fleetstream@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": self.settings.host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.settings.rabbitmq_dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": self.settings.host,
            "ERL_EPMD_PORT": str(self.settings.epmd_port),
        }
        return ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env

    def healthy(self) -> bool:
        import aio_pika

        if not port_open(self.settings.host, self.port):
            return False

        async def probe() -> bool:
            conn = await aio_pika.connect(self.settings.rabbitmq_dsn, timeout=2)
            await conn.close()
            return True

        try:
            return asyncio.run(probe())
        except Exception:
            return False


class Nginx(Service):
    def missing_apt_packages(self) -> list[str]:
        return _which_missing({"nginx": "nginx"})

    def prepare(self) -> None:
        from fleetstream.stack.nginx import render_conf

        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "nginx.conf").write_text(render_conf(self.settings, self.data_dir, self.log_file.parent))

    def command(self) -> tuple[list[str], dict[str, str]]:
        conf = self.data_dir / "nginx.conf"
        return ["nginx", "-p", str(self.data_dir), "-c", str(conf), "-g", "daemon off;"], {}

    def healthy(self) -> bool:
        import httpx

        try:
            r = httpx.get(f"http://{self.settings.host}:{self.port}/nginx-health", timeout=1)
            return r.status_code == 200
        except httpx.HTTPError:
            return False


class FerretDB(Service):
    """MongoDB wire protocol on SQLite, built from our embedding main under deploy/local/ferretdb.

    Built against a patched copy of FerretDB v1.24.2 (:attr:`PATCHES`): its SQLite
    backend looks ``_id`` up with the expression ``_ferretdb_sjson->'$._id'`` while the
    collection's ``_id_`` index is on ``_ferretdb_sjson->"_id"``, so SQLite never uses the
    index and every find, update and delete by ``_id`` scanned the collection (``EXPLAIN QUERY
    PLAN``: SCAN; a lookup took 0.8 ms for the first document of 22,000 and 43 ms for the
    last or a missing one). The patch spells the lookup as the index does (SEARCH ... USING
    INDEX). The same class of bug on the PostgreSQL backend: FerretDB/FerretDB#4646.
    """

    VERSION = "v1.24.2"
    #: (file in the module, text, replacement); bump PATCH_LEVEL when these change.
    PATCHES = (
        (
            "internal/backends/sqlite/metadata/metadata.go",
            "IDColumn = DefaultColumn + \"->'$._id'\"",
            'IDColumn = DefaultColumn + `->"_id"`',
        ),
    )
    PATCH_LEVEL = "p1"

    @property
    def binary(self) -> Path:
        return self.cache_dir / "bin" / f"fleetstream-ferretdb-{self.VERSION}-{self.PATCH_LEVEL}"

    def install(self) -> None:
        if self.binary.exists():
            return
        if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
            raise StackError("ferretdb: the Go toolchain (>= 1.24) is needed to build FerretDB; install Go")
        go = shutil.which("go") or "/usr/local/go/bin/go"
        log = self.home / "logs" / "install-ferretdb.log"
        main = DEPLOY_LOCAL / "ferretdb"
        build = self.cache_dir / "src" / f"ferretdb-{self.VERSION}-{self.PATCH_LEVEL}"
        module = build / "FerretDB"
        if not module.exists():
            found = subprocess.run([go, "mod", "download", "-json", f"github.com/FerretDB/FerretDB@{self.VERSION}"],
                                   cwd=main, capture_output=True, text=True, check=False)  # fmt: skip
            if found.returncode != 0:
                raise StackError(f"ferretdb: go mod download failed: {found.stdout[-2000:]}{found.stderr[-2000:]}")
            tmp = build / "FerretDB.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(json.loads(found.stdout)["Dir"], tmp)
            for path in tmp.rglob("*"):  # the module cache is read-only
                path.chmod(path.stat().st_mode | 0o200)
            for rel, old, new in self.PATCHES:
                f = tmp / rel
                text = f.read_text()
                if old not in text:
                    raise StackError(f"ferretdb: patch does not apply to {rel}")
                f.write_text(text.replace(old, new))
            tmp.rename(module)
        modfile = build / "go.mod"
        shutil.copy(main / "go.mod", modfile)
        shutil.copy(main / "go.sum", build / "go.sum")
        run([go, "mod", "edit", f"-modfile={modfile}", f"-replace=github.com/FerretDB/FerretDB={module}"],
            "ferretdb: go mod edit", log, cwd=main)  # fmt: skip
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        run(
            [go, "build", f"-modfile={modfile}", "-trimpath", "-o", str(self.binary), "."],
            "ferretdb: go build",
            log,
            cwd=main,
            env={"CGO_ENABLED": "0"},
        )

    def command(self) -> tuple[list[str], dict[str, str]]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            str(self.binary),
            "--listen-addr", f"{self.settings.host}:{self.port}",
            "--sqlite-dir", str(self.data_dir.resolve()),
        ], {}  # fmt: skip

    def healthy(self) -> bool:
        """A write and a read, not only ``ping``: a hung FerretDB v1.24 still answered ``ping``."""
        import pymongo

        try:
            client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
                self.settings.mongo_dsn, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000, socketTimeoutMS=5000
            )
            try:
                probe = client["fleetstream_health"]["probe"]
                probe.update_one({"_id": "stack"}, {"$inc": {"n": 1}}, upsert=True)
                return probe.find_one({"_id": "stack"}) is not None
            finally:
                client.close()
        except pymongo.errors.PyMongoError:
            return False


_KAFKA_INSTALL = threading.Lock()


@dataclass
class Kafka(Service):
    """Apache Kafka 4.x in KRaft combined mode (broker + controller), jars from Maven Central.

    One node (``kafka``), or with ``kafka_profile=cluster`` one of a quorum (``kafka-1`` …):
    each node both a broker and a controller, the controllers a static voter set.
    """

    node: int = 1

    @property
    def _ports(self) -> tuple[int, int]:
        _, broker, controller = next(n for n in self.settings.kafka_nodes if n[0] == self.node)
        return broker, controller

    @property
    def _cluster(self) -> bool:
        return self.settings.kafka_profile == "cluster"

    @property
    def libs(self) -> Path:
        return self.cache_dir / "kafka-libs"

    def missing_apt_packages(self) -> list[str]:
        return _which_missing({"java": "openjdk-17-jre-headless", "mvn": "maven"})

    def install(self) -> None:
        with _KAFKA_INSTALL:  # a cluster's nodes share the jars: one copies them, the others find them
            self._install_libs()

    def _install_libs(self) -> None:
        marker = self.libs / ".complete"
        pom = DEPLOY_LOCAL / "kafka" / "pom.xml"
        if marker.exists() and marker.read_text() == pom.read_text():
            return
        shutil.rmtree(self.libs, ignore_errors=True)
        run(
            ["mvn", "-B", "-q", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={self.libs}"],
            "kafka: mvn dependency:copy-dependencies",
            self.home / "logs" / "install-kafka.log",
        )
        marker.write_text(pom.read_text())

    def _java(self) -> list[str]:
        return [
            "java",
            # Kafka's own start script's defaults (kafka-run-class.sh, KAFKA_HEAP_OPTS): a fixed
            # heap and a 20 ms G1 pause goal. With -Xms256m and G1's 200 ms goal young pauses
            # averaged 25 ms (330 of them in a day of benchmarks), with these ~18 ms; each
            # pause holds up every produce and fetch.
            "-Xms1g",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={DEPLOY_LOCAL / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
            "-cp",
            f"{self.libs}/*",
        ]

    def prepare(self) -> None:
        s = self.settings
        logs = self.data_dir / "kraft-logs"
        conf = self.data_dir / "server.properties"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        broker, controller = self._ports
        if self._cluster:
            voters = ",".join(f"{n}@{s.host}:{c}" for n, _, c in s.kafka_nodes)
            quorum = [f"controller.quorum.voters={voters}"]
            rf, isr = s.topic_replication, s.topic_min_insync
        else:
            quorum = [f"controller.quorum.bootstrap.servers={s.host}:{controller}"]
            rf, isr = 1, 1
        conf.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={self.node}",
                    *quorum,
                    f"listeners=PLAINTEXT://{s.host}:{broker},CONTROLLER://{s.host}:{controller}",
                    f"advertised.listeners=PLAINTEXT://{s.host}:{broker},CONTROLLER://{s.host}:{controller}",
                    "inter.broker.listener.name=PLAINTEXT",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={logs}",
                    f"num.partitions={s.default_partitions}",
                    "auto.create.topics.enable=false",
                    f"default.replication.factor={rf}",
                    f"min.insync.replicas={isr}",
                    "unclean.leader.election.enable=false",  # a lagging replica never becomes leader: no acked loss
                    # A broker killed without a goodbye is fenced (its partitions' leaders move) once the
                    # controllers miss its heartbeats this long: Kafka's 9 s held every produce to its
                    # partitions that long (chaos: 9.1 s until every partition was processed again).
                    "broker.session.timeout.ms=3000",
                    "broker.heartbeat.interval.ms=500",
                    f"offsets.topic.replication.factor={rf}",
                    "offsets.topic.num.partitions=8",
                    f"transaction.state.log.replication.factor={rf}",
                    f"transaction.state.log.min.isr={isr}",
                    f"share.coordinator.state.topic.replication.factor={rf}",
                    f"share.coordinator.state.topic.min.isr={isr}",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        if not (logs / "meta.properties").exists():
            if self._cluster:  # every node of the quorum formatted with the same cluster id
                id_file = self.home / "data" / "kafka-cluster.id"
                if not id_file.exists():
                    id_file.write_text(uuid.uuid4().hex[:22])
                fmt = ["-t", id_file.read_text().strip(), "-c", str(conf)]
            else:
                fmt = ["--standalone", "-t", str(uuid.uuid4().hex[:22]), "-c", str(conf)]
            run(
                [*self._java(), "kafka.tools.StorageTool", "format", *fmt],
                "kafka: storage format",
                self.log_file,
            )

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [*self._java(), "kafka.Kafka", str(self.data_dir / "server.properties")], {}

    def healthy(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        if not port_open(self.settings.host, self._ports[0]):
            return False

        async def probe() -> bool:
            own = f"{self.settings.host}:{self._ports[0]}"  # this node, not the cluster: each is probed alone
            admin = AIOKafkaAdminClient(bootstrap_servers=own, request_timeout_ms=3000)
            try:
                await asyncio.wait_for(admin.start(), 5)
                await asyncio.wait_for(admin.list_topics(), 5)
                return True
            finally:
                await admin.close()

        try:
            return asyncio.run(probe())
        except Exception:
            return False


def quiet_client_logs() -> None:
    """Probes fail on purpose while servers boot; the clients should not print each failure."""
    for name in ("aiokafka", "aio_pika", "aiormq", "pymongo"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def kafka_nodes(s: Settings) -> list[Service]:
    if s.kafka_profile == "single":
        return [Kafka("kafka", s.kafka_port, s, start_timeout=90)]
    return [Kafka(f"kafka-{n}", broker, s, start_timeout=120, node=n) for n, broker, _ in s.kafka_nodes]


def all_services(settings: Settings) -> list[Service]:
    """In start order: epmd before RabbitMQ; the rest are independent."""
    s = settings
    return [
        *kafka_nodes(s),
        Redis("redis", s.redis_port, s),
        Epmd("epmd", s.epmd_port, s, start_timeout=10),
        RabbitMQ("rabbitmq", s.rabbitmq_port, s, start_timeout=90),
        FerretDB("ferretdb", s.mongo_port, s),
        Nginx("nginx", s.nginx_port, s, start_timeout=15),
    ]
