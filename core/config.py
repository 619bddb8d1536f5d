"""Settings read from ``FLEETSTREAM_*`` environment variables.

Every default points at the local stack that ``fleetstream stack up`` starts on
127.0.0.1, so a fresh checkout runs without any configuration; deployments
override through the environment (never through files in the repository).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETSTREAM_", extra="ignore")

    @field_validator("producer_compression")
    @classmethod
    def _no_compression(cls, v: str | None) -> str | None:
        return None if v is None or v.lower() in ("", "none") else v

    # --- where the local stack keeps data, logs and downloaded runtimes
    home: Path = Field(default=REPO_ROOT / ".fleetstream")
    #: The built browser UI the API serves at ``/`` (``make web``); absent → API only.
    web_dist: Path = Field(default=REPO_ROOT / "web" / "dist")

    # --- service endpoints
    host: str = "127.0.0.1"
    #: Address the API and worker web servers bind to (0.0.0.0 inside containers).
    bind_host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    redis_port: int = 6379
    rabbitmq_port: int = 5672
    rabbitmq_dist_port: int = 25672
    epmd_port: int = 4369
    mongo_port: int = 27017
    nginx_port: int = 8080
    #: Requests/s nginx lets one client make (a bearer token, an OsmAnd URL token, else an address), and its burst.
    nginx_client_rate: int = 100
    nginx_client_burst: int = 1000
    api_port: int = 8000
    api_replicas: int = 1
    #: What one API process serves: ``all``, or some of auth, bookings, telemetry, notifications.
    api_services: str = "all"
    worker_web_port: int = 6066

    kafka_bootstrap: str | None = None
    #: ``cluster``: ``kafka_cluster_size`` KRaft nodes (broker and controller each) from
    #: ``kafka_cluster_port`` up (node i: broker port + 2i, its controller the port after), and
    #: topics at replication factor 3 with ``min.insync.replicas`` 2 (``fleetstream stack up --profile cluster``).
    kafka_profile: Literal["single", "cluster"] = "single"
    kafka_cluster_port: int = 19092
    kafka_cluster_size: int = 3
    #: Replicas of every project topic and changelog (3 on a cluster), and how many must have a record
    #: before an ``acks=all`` send is acknowledged (2: one broker may be down, nothing acknowledged is lost).
    topic_replication: int = 1
    topic_min_insync: int = 1
    redis_url: str | None = None
    #: The Redis database of this deployment (when ``redis_url`` is not given). Redis keys are
    #: not prefixed: two deployments on one Redis (like two topic namespaces on one broker)
    #: need different databases, or one's matcher claims the other's pending bookings.
    #: The demo uses 0, tests 1, benchmarks 2.
    redis_db: int = Field(default=0, ge=0, le=15)
    rabbitmq_url: str | None = None
    mongo_url: str | None = None
    mongo_db: str = "fleetstream"
    #: A MongoDB call that has not answered after this fails (the sinks retry it, idempotently)
    #: instead of holding its consumer forever: FerretDB v1.24 once stopped answering every
    #: request but ``ping`` in the middle of a 25,000 pings/s benchmark.
    mongo_socket_timeout_s: float = 60.0

    # --- Kafka / Faust
    app_id: str = "fleetstream"
    #: Prefix of every project topic (``bench`` → ``bench.telemetry.raw``), so benchmarks and
    #: other environments sharing a broker never leave a backlog in the demo's topics.
    topic_namespace: str = Field(default="", pattern=r"^[A-Za-z0-9_-]*$")
    telemetry_partitions: int = 8
    default_partitions: int = 8
    #: Faust's table store: ``fleetmemory://`` is its memory store keeping applied offsets, so a
    #: rebalance rereads only the changelog it has not applied (``streams.tablestore``).
    faust_store: str = "fleetmemory://"
    #: Where a *new* consumer group starts; "earliest" loses nothing, tests use "latest".
    consumer_offset_reset: str = "earliest"
    producer_linger_ms: int = 1
    #: Kafka batch compression of our producers (API and workers): "lz4", "gzip", "zstd", or "none".
    #: Off by default: at 25,000 pings/s on two cores, lz4 in the Python producers cost the
    #: platform a tenth of its throughput (interleaved runs stored 22.0k and 22.1k pings/s with
    #: lz4, 25.1k and 24.9k without). JSON telemetry compresses about 4x, so turn it on where
    #: broker disk or network are scarcer than producer CPU.
    producer_compression: str | None = None
    #: The telemetry agent yields a batch this long after its first record (``streams.batching``):
    #: the floor of a ping's wait in the worker; ``telemetry_busy_linger_ms`` when that record was
    #: already older than ``telemetry_behind_ms`` (the worker is behind: fewer, larger batches).
    telemetry_linger_ms: float = 2.0
    telemetry_busy_linger_ms: float = 50.0
    telemetry_behind_ms: float = 50.0
    telemetry_max_batch: int = 1000
    #: Faust standby replicas per table partition: another worker of the group keeps a warm copy
    #: (fast fail-over), at the price of reading every changelog twice.
    table_standby_replicas: int = 1
    #: How soon the group notices a worker gone without a goodbye (kill -9, a lost node) and hands
    #: its partitions to the others. Kafka's and Faust's 60 s left a dead worker's drivers without
    #: processing for a minute, and a restarted worker waited that long to rejoin; heartbeats go
    #: every ``consumer_session_timeout_s / 5`` from their own task, so only a loop blocked for
    #: seconds on end would lose a live member. 6 s is the brokers' least (``group.min.session.timeout.ms``);
    #: with 10 s a killed worker's partitions were processed again 14.7 s later, with 6 s 10.8 s
    #: (``benchmarks/chaos.py``, 300 devices, one run each).
    consumer_session_timeout_s: float = Field(default=6.0, ge=6.0, le=300.0)
    #: Workers commit consumer offsets this often, or after this many records (``streams.app``);
    #: longer means fewer commits in the fetch path and more to replay after a crash.
    commit_interval_s: float = 1.0
    commit_every: int = 1000

    # --- driver presence
    offline_after_s: float = 60.0
    #: How long an offline driver stays on the dispatcher's map (``GET /v1/drivers``).
    driver_known_s: float = 24 * 3600.0
    offline_check_s: float = 2.0
    default_dwell_s: float = 300.0
    #: A fix whose accuracy circle (at most this radius) straddles a zone's edge neither enters nor exits it.
    fence_accuracy_cap_m: float = Field(default=50.0, ge=0)
    location_publish_interval_s: float = 1.0
    #: The ``drivers`` collection's copy of each driver's state (recovery and reporting; Redis is
    #: the live copy, the clean table the authoritative one), written at most this often per
    #: driver; None: not at all. Each write is an update by ``_id``: 0.6 ms on our patched FerretDB
    #: at 10,000 drivers (18 ms on stock v1.24, which scans; see ``fleetstream.stack.services``).
    driver_persist_interval_s: float | None = 60.0
    #: History is written in per-driver buckets (``streams.history``): one document per driver when
    #: it holds this many pings or its first ping waited this long (how far history trails live state).
    history_bucket_pings: int = 200
    history_flush_s: float = 10.0
    #: Trips and stops (``streams.agents.trips``): a stop is this long within this radius; an open
    #: trip reports its distance so far this often.
    stop_min_s: float = Field(default=300.0, gt=0)
    stop_radius_m: float = Field(default=50.0, gt=0)
    trip_progress_s: float = Field(default=60.0, gt=0)
    #: The longest time range a trips, stops or summary report covers (they read a document per day).
    report_max_range_s: float = Field(default=31 * 86400.0, gt=0)
    #: The longest time range one track export (GPX, KML, CSV) covers: it streams, but holds a reader that long.
    export_max_range_s: float = Field(default=7 * 86400.0, gt=0)

    # --- validation of what devices send
    max_batch_pings: int = 500
    max_future_skew_s: float = 300.0
    max_ping_age_s: float = 7 * 24 * 3600.0

    # --- ingest
    ingest_timeout_s: float = 5.0
    device_token_cache_s: float = 5.0

    # --- cleaning rules
    max_accuracy_m: float = 100.0
    max_speed_mps: float = 70.0

    # --- bookings and matching
    #: How long the API waits for the booking agent's verdict before answering 202 "pending".
    booking_reply_timeout_s: float = Field(default=5.0, gt=0, le=20.0)  # a BLPOP: below the client's read timeout
    offer_timeout_s: float = 30.0
    #: An expired offer claimed by a worker's timer is claimed again after this long unless the
    #: booking agent handled its timeout (the worker may have died before the command left).
    offer_claim_lease_s: float = 10.0
    #: Bookings due for matching are gathered this often and assigned together.
    match_window_s: float = 2.0
    match_timeout_s: float = 120.0
    match_radii_m: tuple[float, ...] = (1_000.0, 3_000.0, 7_000.0, 15_000.0)
    match_candidates: int = 20
    #: ETA updates: emitted when the estimate moves by this much (seconds or fraction) ...
    eta_min_change_s: float = 30.0
    eta_min_change_ratio: float = 0.10
    #: ... and at least this often while the driver has a job (they carry its position).
    eta_max_interval_s: float = 5.0
    #: Radius of the geofence around a pickup that marks the driver as arrived.
    arrival_radius_m: float = 60.0
    #: Weight of a new observation in the learned speed per H3 cell and hour.
    speed_learning_rate: float = 0.05
    #: Straight-line distance x this = road distance, for ETAs.
    road_factor: float = 1.35
    default_speed_mps: float = 8.0

    # --- failure handling
    #: How long a step waits for an unreachable server (Redis, RabbitMQ, MongoDB restarting) before
    #: the worker stops; a restart takes seconds, and waiting replays nothing.
    server_retry_s: float = 30.0
    #: Between reconnection attempts to RabbitMQ (aio-pika's default is 5 s: a restarted broker
    #: went unused for up to that long after it was back).
    rabbitmq_reconnect_s: float = Field(default=1.0, gt=0)
    #: A worker whose agent crashed exits this many seconds later even if its shutdown hangs,
    #: so that a restart-on-exit supervisor always restarts it.
    crash_exit_s: float = 5.0
    #: How often a worker looks for records Faust dropped without delivering (``streams.app.GapRepair``).
    gap_check_s: float = 10.0
    #: Fault injection for tests and drills: step name -> a driver id whose records that step
    #: fails on (``{"driver_state": "poison-1"}``), to prove a poison record stops nothing else.
    fault_poison: dict[str, str] = Field(default_factory=dict)

    # --- notification sockets
    #: uvicorn's WebSocket implementation: the sans-I/O one held 77 KiB per idle socket
    #: against 141 KiB for "websockets" (benchmarks/notify.py, 2,000 sockets).
    ws_impl: str = "websockets-sansio"
    #: permessage-deflate on sockets (uvicorn's default: on). Off: each socket's zlib streams
    #: were most of its memory (see benchmarks/RESULTS.md), and notifications are small JSON.
    ws_per_message_deflate: bool = False
    #: The largest WebSocket message a client may send (uvicorn's default: 16 MiB): a telemetry
    #: batch of ``max_batch_pings`` fits; a client cannot make a replica buffer more.
    ws_max_size: int = 1024 * 1024
    notify_queue_size: int = 1000
    notify_replay_max: int = 1000
    notify_heartbeat_s: float = 15.0
    notify_send_timeout_s: float = 5.0

    # --- accounts
    #: Proxies whose X-Forwarded-For is believed (uvicorn): the client address rate limits use.
    forwarded_allow_ips: str = "127.0.0.1"
    access_token_ttl_s: float = 900.0
    #: How long a booking's read-only tracking link works.
    share_link_ttl_s: float = 2 * 24 * 3600.0
    refresh_token_ttl_s: float = 30 * 24 * 3600.0
    #: Failed logins per account, and failed logins per client address, within ``login_window_s``.
    login_max_failures_per_account: int = 5
    login_max_attempts_per_address: int = 30
    login_window_s: float = 900.0
    #: History and fleet reads per principal per ``read_window_s`` (all replicas together); the
    #: limit is generous for a console and a phone, and bounds what one leaked token can cost.
    read_limit: int = 120
    read_window_s: float = 10.0

    # --- security (random secrets under FLEETSTREAM_HOME/secrets unless set; never committed)
    jwt_secret: SecretStr | None = None
    admin_token: SecretStr | None = None
    #: What a Prometheus scraper sends for the API's ``/metrics`` (the admin token works too).
    metrics_token: SecretStr | None = None

    def topic(self, name: str) -> str:
        """The broker-side name of project topic ``name`` in this namespace."""
        return f"{self.topic_namespace}.{name}" if self.topic_namespace else name

    @property
    def kafka_servers(self) -> str:
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        if self.kafka_profile == "cluster":
            return ",".join(f"{self.host}:{broker}" for _, broker, _ in self.kafka_nodes)
        return f"{self.host}:{self.kafka_port}"

    @property
    def kafka_nodes(self) -> list[tuple[int, int, int]]:
        """(node id, broker port, controller port) of each local Kafka node."""
        if self.kafka_profile == "single":
            return [(1, self.kafka_port, self.kafka_controller_port)]
        base = self.kafka_cluster_port
        return [(i + 1, base + 2 * i, base + 2 * i + 1) for i in range(self.kafka_cluster_size)]

    @model_validator(mode="after")
    def _cluster_durability(self) -> Settings:
        """A cluster's topics survive a broker: 3 replicas, 2 in sync, unless set otherwise."""
        if self.kafka_profile == "cluster" and self.topic_replication == 1:
            self.topic_replication = min(3, self.kafka_cluster_size)
            self.topic_min_insync = max(1, self.topic_replication - 1)
        return self

    @property
    def redis_dsn(self) -> str:
        return self.redis_url or f"redis://{self.host}:{self.redis_port}/{self.redis_db}"

    @property
    def rabbitmq_dsn(self) -> str:
        return self.rabbitmq_url or f"amqp://guest:guest@{self.host}:{self.rabbitmq_port}/"

    @property
    def mongo_dsn(self) -> str:
        return self.mongo_url or f"mongodb://{self.host}:{self.mongo_port}/"


@lru_cache
def get_settings() -> Settings:
    return Settings()
