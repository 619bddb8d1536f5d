"""Faults under the phone-fleet load, one after another, and what was lost.

    python -m benchmarks.chaos --devices 2000 --duration 240

On the cluster profile unless ``FLEETSTREAM_KAFKA_PROFILE=single``: the stack's three KRaft
brokers (``fleetstream stack up --profile cluster``; started here if down, and stopped
again after), topics at replication 3 with ``min.insync.replicas`` 2. The phone fleet of
:mod:`benchmarks.phones` (one fix per request, ``acks=all`` idempotent producers) goes
through an nginx of its own to ``--apis`` replicas of each API service (``--no-split``: of
one process serving all), ``--workers`` live workers in one consumer group and the store
worker. Clients resend a fix not answered 202 (no answer, 429, 5xx) as it was, as phones
do. While it runs, evenly spaced:

- ``scale``: a live worker added (it must take partitions over: ``took_over_s``), then
  stopped as an autoscaler stops one (SIGTERM), handing them back (``handback_s``, from
  its exit);
- ``worker``: ``kill -9`` of a live worker, started again once the other serves its partitions;
- ``api``: ``kill -9`` of a telemetry and a notification API replica, started again 2 s
  later (nginx fails over; the sockets it held reconnect with ``after=``);
- ``kafka``: ``kill -9`` of the broker leading most raw partitions, started again 2 s later;
- ``redis``, ``rabbitmq``, ``ferretdb``: the stack's server stopped and started again.

Servers are only killed or restarted where this checkout started them. Then it lets the
workers drain and checks every device: each fix answered 202 is in the history exactly
once (**lost**, **duplicated**), and its live state is its last accepted fix
(**state_behind**). Per fault: how long the server or process was away (``away_s``); from
a kill, how long until every raw partition was processed again (``handover_s``: the
survivors took the partitions or leaders over); how long a restarted process took to be
ready (``ready_s``); from its return, how long until every partition was processed again
(``resumed_s``) and until the live lag fell to its earlier level (``recovered_s``).

Meanwhile ``--customers`` book and cancel through nginx (:mod:`benchmarks.customers`),
each listening on a notification socket that reconnects with ``after=``: every booking
event stored for them must have been heard once (**missed**, **repeated**). Writes
``benchmarks/results/chaos-<devices>.json`` with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The cluster profile (three KRaft brokers, one of them killed) unless FLEETSTREAM_KAFKA_PROFILE says
# otherwise; set before benchmarks.telemetry reads the settings.
os.environ.setdefault("FLEETSTREAM_KAFKA_PROFILE", "cluster")

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from api.services import SERVICES, ServiceName
from benchmarks.customers import Customers
from benchmarks.phones import build_client, issue_tokens
from benchmarks.telemetry import (
    ROOT,
    T_CLEAN,
    T_RAW,
    S,
    commit_end_offsets,
    drop_app_topics,
    group_lag,
    project_topics,
    spawn,
    wait_http,
)
from fleetstream.stack.manager import Stack
from fleetstream.stack.nginx import render_conf
from fleetstream.stack.process import PidRecord
from schemas.contracts import BOOKING_EVENTS, driver_key

T_BOOKED = S.topic(BOOKING_EVENTS.name)
FAULTS = ("scale", "worker", "api", "kafka", "redis", "rabbitmq", "ferretdb")
#: ``CHAOS_WORKER_LOGLEVEL=info`` logs the live workers' rebalances and recoveries (where a hand-over's time goes).
LIVE_LOGLEVEL = os.environ.get("CHAOS_WORKER_LOGLEVEL", "warning")
LIVE_AGENTS = "clean,driver_state,geofence,publish,eta,bookings,matching"


class Fleet:
    """The processes under test, each one restartable with the command it was started with.

    ``split``: ``apis`` replicas of each API service (``fleetstream api --service``), as the
    original design runs them; else ``apis`` processes serving every router. ``workers`` live
    workers share one consumer group; the store worker has a group of its own.
    """

    def __init__(self, tmp: Path, env: dict[str, str], apis: int, workers: int, split: bool) -> None:
        self.tmp, self.env = tmp, env
        cli = [sys.executable, "-m", "fleetstream.cli"]
        self.commands: dict[str, list[str]] = {}
        self.ready: dict[str, str] = {}
        self.live = [f"worker{i + 1}" for i in range(workers)]
        self.spare = f"worker{workers + 1}"  # the scale-out check's worker, started only by that fault
        for i, name in enumerate([*self.live, self.spare]):
            port = 6071 + i
            self.commands[name] = [*cli, "worker", "--loglevel", LIVE_LOGLEVEL, "--agents", LIVE_AGENTS,
                                   "--web-port", str(port)]  # fmt: skip
            self.ready[name] = f"http://127.0.0.1:{port}/ready"
        self.commands["store"] = [*cli, "worker", "--loglevel", "warning", "--agents", "store",
                                  "--app-id", f"{env['FLEETSTREAM_APP_ID']}-store", "--web-port", "6070"]  # fmt: skip
        self.ready["store"] = "http://127.0.0.1:6070/ready"
        self.upstreams: dict[ServiceName, list[str]] = {name: [] for name in SERVICES}
        self.telemetry_apis: list[str] = []  # the replicas that take the phones' fixes
        self.socket_apis: list[str] = []  # the replicas that hold notification sockets
        groups: list[tuple[str, list[ServiceName]]] = (
            [(name, [name]) for name in SERVICES] if split else [("all", list(SERVICES))]
        )
        port = 8081
        for label, served in groups:
            for i in range(apis):
                name = f"{label}{i + 1}"
                self.commands[name] = [*cli, "api", "--port", str(port), "--service", label]
                self.ready[name] = f"http://127.0.0.1:{port}/readyz"
                for service in served:
                    self.upstreams[service].append(f"127.0.0.1:{port}")
                if "telemetry" in served:
                    self.telemetry_apis.append(name)
                if "notifications" in served:
                    self.socket_apis.append(name)
                port += 1
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = {}
        self.down: set[str] = set()  # killed or stopped on purpose: not restarted by :meth:`supervise`
        self.crashes: list[dict[str, Any]] = []

    def start(self, name: str) -> None:
        n = self.starts.get(name, 0)
        self.starts[name] = n + 1
        self.down.discard(name)
        self.procs[name] = spawn(self.commands[name], self.env, self.tmp / f"{name}-{n}.log")

    async def supervise(self, t0: float) -> None:
        """Restart a process that exited by itself, as Kubernetes restarts a pod, and say so.

        A crash is reported (``crashed``), not hidden: a server restarted for seconds must
        not stop a worker. Without the restart one crash would starve its partitions for the
        rest of the run and every later figure would measure that instead.
        """
        while True:
            for name, proc in list(self.procs.items()):
                if name not in self.down and proc.poll() is not None:
                    self.crashes.append({"process": name, "exit": proc.returncode, "t": round(time.monotonic() - t0, 1),
                                         "log": str(self.tmp / f"{name}-{self.starts[name] - 1}.log")})  # fmt: skip
                    self.start(name)
            await asyncio.sleep(0.5)

    def wait_ready(self, name: str) -> None:
        wait_http(self.ready[name])

    def kill(self, name: str) -> None:
        self.down.add(name)
        self.procs[name].kill()
        self.procs[name].wait(10)

    def stop(self, name: str) -> None:
        """SIGTERM, as Kubernetes stops a pod the autoscaler removes: the worker leaves its group."""
        self.down.add(name)
        self.procs[name].terminate()
        self.procs[name].wait(60)

    @property
    def initial(self) -> list[str]:
        return [name for name in self.commands if name != self.spare]

    def stop_all(self) -> None:
        self.down.update(self.procs)
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def ours(service: str) -> bool:
    stack = Stack(S, only=[service])
    record = PidRecord.read(stack.services[0].pid_file)
    return record is not None and record.alive()


async def busiest_broker(admin: AIOKafkaAdminClient) -> int:
    """The node that leads most partitions of the raw topic: killing it moves the most leaders."""
    (described,) = await admin.describe_topics([T_RAW])
    leaders = [p["leader"] for p in described["partitions"]]
    return max(set(leaders), key=leaders.count)


async def committed(admin: AIOKafkaAdminClient, group: str) -> dict[int, int] | None:
    """The live group's committed offset per raw partition, or None while Kafka does not answer."""
    tps = [TopicPartition(T_RAW, p) for p in range(S.telemetry_partitions)]
    try:
        offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(group, partitions=tps), 5)
    except Exception:  # a broker or the group coordinator is moving: ask again
        return None
    return {tp.partition: (offsets[tp].offset if tp in offsets else -1) for tp in tps}


async def progress_after(admin: AIOKafkaAdminClient, group: str, timeout: float) -> float | list[int]:
    """Seconds until every raw partition's committed offset moved past where it is now.

    Under load every partition has records waiting, so this is when processing (and its
    commit, every ``commit_interval_s``) had resumed on all of them. After ``timeout``: the
    partitions that had not moved.
    """
    t0 = time.monotonic()
    start = None
    while start is None and time.monotonic() - t0 < timeout:
        start = await committed(admin, group)
    if start is None:
        return list(range(S.telemetry_partitions))
    stalled = sorted(start)
    while time.monotonic() - t0 < timeout:
        now = await committed(admin, group)
        if now is not None:
            stalled = [p for p in stalled if now[p] <= start[p]]
            if not stalled:
                return round(time.monotonic() - t0, 1)
        await asyncio.sleep(0.25)
    return stalled


async def raw_owners(admin: AIOKafkaAdminClient, group: str) -> list[int] | None:
    """Raw partitions held by each member of the live group, as its coordinator reports them."""
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    try:
        (response,) = await asyncio.wait_for(admin.describe_consumer_groups([group]), 5)
    except Exception:  # the coordinator is moving: ask again
        return None
    (described,) = response.groups
    held = []
    for member in described[5]:  # (member_id, client_id, client_host, metadata, assignment)
        assignment = ConsumerProtocolMemberAssignment.decode(member[4]) if member[4] else None
        parts = [p for topic, ps in (assignment.assignment if assignment else []) if topic == T_RAW for p in ps]
        held.append(len(parts))
    return sorted(held)


def timed(key: str, outcome: float | list[int]) -> dict[str, Any]:
    """``{key: seconds}``, or ``{key: None, key_stalled: partitions}`` when some never moved."""
    if isinstance(outcome, list):
        return {key: None, f"{key.removesuffix('_s')}_stalled": outcome}
    return {key: outcome}


async def inject(fault: str, fleet: Fleet, admin: AIOKafkaAdminClient, group: str) -> dict[str, Any]:
    """Do one fault; returns when what it took away is back, with how long that was.

    For a worker or broker killed, also how long until every partition was processed again
    (``handover_s``, from the kill: the survivors took the dead one's partitions or leaders),
    and for a process how long its restart took to be ready (``ready_s``).
    """
    t0 = time.monotonic()
    result: dict[str, Any] = {"fault": fault}
    handover: asyncio.Task[float | list[int]] | None = None
    if fault == "worker":
        # It stays dead until the survivors serve its partitions, so that handover_s is theirs
        # alone (a restart meanwhile joins the same rebalance); then it rejoins.
        name = fleet.live[-1]
        fleet.kill(name)
        result |= timed("handover_s", await progress_after(admin, group, 40))
        t_start = time.monotonic()
        fleet.start(name)
        await asyncio.to_thread(fleet.wait_ready, name)
        result |= {"process": name, "ready_s": round(time.monotonic() - t_start, 1)}
    elif fault == "scale":
        # An autoscaler adds a worker under load: it must take raw partitions over, and every
        # partition must be processed again after the rebalance; then it is removed again.
        name = fleet.spare
        fleet.start(name)
        await asyncio.to_thread(fleet.wait_ready, name)
        result |= {"process": name, "ready_s": round(time.monotonic() - t0, 1)}
        members = len(fleet.live) + 1

        async def took_over() -> bool:
            held = await raw_owners(admin, group)
            return held is not None and len(held) == members and min(held) > 0

        result["took_over_s"] = await wait_until(took_over, 40, every=0.5)
        result["held"] = await raw_owners(admin, group)
        result |= timed("handover_s", await progress_after(admin, group, 40))
        t_stop = time.monotonic()
        await asyncio.to_thread(fleet.stop, name)
        result["stop_s"] = round(time.monotonic() - t_stop, 1)  # SIGTERM to exit: it left the group
        result |= timed("handback_s", await progress_after(admin, group, 40))  # from its exit
        result["held_after"] = await raw_owners(admin, group)
    elif fault == "api":
        # The replica taking the phones' fixes, and the one holding half the customers' sockets
        # (one process when the services are not split): they reconnect with after= meanwhile.
        names = list(dict.fromkeys([fleet.telemetry_apis[-1], fleet.socket_apis[-1]]))
        for name in names:
            fleet.kill(name)
        await asyncio.sleep(2)
        t_start = time.monotonic()
        for name in names:
            fleet.start(name)
        for name in names:
            await asyncio.to_thread(fleet.wait_ready, name)
        result |= {"process": ",".join(names), "ready_s": round(time.monotonic() - t_start, 1)}
    else:
        service = f"kafka-{await busiest_broker(admin)}" if fault == "kafka" else fault
        if not ours(service):
            return {"fault": fault, "skipped": "the stack's server was not started from this checkout"}
        stack = Stack(S, only=[service])
        if fault == "kafka":  # kill -9: no controlled shutdown, the leaders move only when it is missed
            record = PidRecord.read(stack.services[0].pid_file)
            assert record is not None
            os.kill(record.pid, signal.SIGKILL)
            handover = asyncio.create_task(progress_after(admin, group, 60))
        else:
            await asyncio.to_thread(stack.down)
        await asyncio.sleep(2)
        await asyncio.to_thread(stack.up)
        result["server"] = service
    result["away_s"] = round(time.monotonic() - t0, 1)
    if handover is not None:
        result |= timed("handover_s", await handover)
    return result


async def topic_durability(admin: AIOKafkaAdminClient) -> dict[str, Any]:
    """The raw topic's replicas per partition and ``min.insync.replicas``, as the brokers report them."""
    (described,) = await admin.describe_topics([T_RAW])
    (configs,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, T_RAW)])
    entries = {c[0]: c[1] for c in configs.resources[0][4]}
    replicas = sorted({len(p["replicas"]) for p in described["partitions"]})
    return {"brokers": len(S.kafka_nodes), "replicas": replicas, "min_insync": int(entries["min.insync.replicas"])}


async def verify(app_db: str, accepted: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Every fix answered 202 stored once; each device's live state at its last accepted fix."""
    from motor.motor_asyncio import AsyncIOMotorClient
    from redis.asyncio import Redis

    from schemas.track import bucket_pings

    mongo = AsyncIOMotorClient(S.mongo_dsn, tz_aware=True)
    r = Redis.from_url(S.redis_dsn, decode_responses=True)
    lost = duplicated = state_behind = 0
    examples: dict[str, Any] = {}
    try:
        ids = list(accepted)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            seqs: dict[str, list[int]] = {d: [] for d in chunk}
            fields = {"pings": 1, "fmt": 1, "driver_id": 1}
            async for doc in mongo[app_db].tracks.find({"driver_id": {"$in": chunk}}, fields):
                seqs[doc["driver_id"]] += [q["seq"] for q in bucket_pings(doc)]
            pipe = r.pipeline()
            for d in chunk:
                pipe.hget(driver_key(d), "seq")
            live = await pipe.execute()
            for d, state in zip(chunk, live, strict=True):
                last, _ = accepted[d]
                want = set(range(1, last + 1))
                got = seqs[d]
                missing = want - set(got)
                lost += len(missing)
                duplicated += len(got) - len(set(got))
                if missing and "lost" not in examples:
                    examples["lost"] = {d: sorted(missing)[:10]}
                if last > 0 and (state is None or int(state) < last):
                    state_behind += 1
                    examples.setdefault("state_behind", {d: (state, last)})
    finally:
        mongo.close()
        await r.aclose()
    return {"lost": lost, "duplicated": duplicated, "state_behind": state_behind, "examples": examples}


async def wait_until(check: Callable[[], Any], timeout: float, every: float = 1.0) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if await asyncio.wait_for(check(), 10):
                return round(time.monotonic() - t0, 1)
        except Exception:  # Kafka not answering for a moment (a restarted broker's connection): ask again
            pass
        await asyncio.sleep(every)
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = S.home / "bench" / "chaos"
    tmp.mkdir(parents=True, exist_ok=True)
    client = build_client()
    app_id = f"chaos-{uuid.uuid4().hex[:6]}"
    db_name = f"bench_{app_id.replace('-', '_')}"
    env = {"FLEETSTREAM_APP_ID": app_id, "FLEETSTREAM_MONGO_DB": db_name, "FLEETSTREAM_DEVICE_TOKEN_CACHE_S": "300",
           "FLEETSTREAM_KAFKA_PROFILE": S.kafka_profile}  # fmt: skip
    from streams.topics import ensure_topics

    cluster = Stack(S, only=[f"kafka-{n}" for n, _, _ in S.kafka_nodes]) if S.kafka_profile == "cluster" else None
    started_cluster: list[str] = []
    if cluster is not None:  # the stack's 3 KRaft nodes (fleetstream stack up --profile cluster), if not up yet
        started_cluster = [st.name for st in cluster.status() if st.state == "stopped"]
        await asyncio.to_thread(cluster.up)
    await ensure_topics(S)
    topics = project_topics()
    await commit_end_offsets(app_id, topics)
    await commit_end_offsets(f"{app_id}-store", topics)
    fleet = Fleet(tmp, env, args.apis, args.workers, split=args.split)
    for name in fleet.initial:
        fleet.start(name)
    nginx_dir = tmp / "nginx"
    nginx_dir.mkdir(exist_ok=True)
    conf = nginx_dir / "nginx.conf"
    front = S.model_copy(update={"nginx_port": args.nginx_port, "nginx_client_rate": 1_000_000})
    conf.write_text(render_conf(front, nginx_dir, nginx_dir, fleet.upstreams))
    nginx = spawn(["nginx", "-p", str(nginx_dir), "-c", str(conf), "-g", "daemon off;"], {}, tmp / "nginx.log")
    url = f"http://127.0.0.1:{args.nginx_port}"
    admin = AIOKafkaAdminClient(bootstrap_servers=S.kafka_servers)
    faults: list[dict[str, Any]] = []
    supervisor: asyncio.Task[None] | None = None
    try:
        for name in fleet.initial:
            fleet.wait_ready(name)
        wait_http(f"{url}/healthz")
        ids = [f"cx{i:06d}-{app_id[-6:]}" for i in range(args.devices)]
        tokens = await issue_tokens(url, ids)
        tokfile, accepted_file = tmp / "tokens.txt", tmp / "accepted.txt"
        tokfile.write_text("".join(f"{d} {tokens[d]}\n" for d in ids))
        await admin.start()
        kafka = await topic_durability(admin)
        customers = Customers(url, args.customers)
        await customers.sign_up()
        customers.start()
        cmd = [str(client), "--url", url, "--tokens", str(tokfile), "--duration", f"{args.duration}s",
               "--period-min", f"{args.period_min}s", "--period-max", f"{args.period_max}s", "--catchup", "0",
               "--retry", "--grace", "90s", "--accepted", str(accepted_file)]  # fmt: skip
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE)  # noqa: ASYNC220 (one child, read at the end)
        t0 = time.monotonic()
        samples: list[dict[str, Any]] = []

        async def sample() -> None:
            while True:
                try:
                    lag = await asyncio.wait_for(group_lag(admin, app_id, T_RAW), 10)
                except Exception:  # a broker is down, its partitions' leaders moving: the next sample
                    lag = None
                if lag is not None:
                    samples.append({"t": round(time.monotonic() - t0, 1), "lag_raw": lag})
                await asyncio.sleep(1)

        sampler = asyncio.create_task(sample())
        supervisor = asyncio.create_task(fleet.supervise(t0))
        chosen = [f for f in args.faults.split(",") if f]
        spacing = (args.duration - 20) / max(1, len(chosen))
        for i, fault in enumerate(chosen):
            at = 15 + i * spacing
            await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
            before = [s["lag_raw"] for s in samples[-5:]] or [0]
            baseline = statistics.median(before) + args.devices  # a second of fixes over the usual
            if args.duration - (time.monotonic() - t0) < 15:
                # The earlier faults ran long (a restart under load): without load nothing would
                # show this one's recovery. Said, so that a short run is read for what it is.
                result = {"fault": fault, "skipped": "too late: the load ends before its recovery would show"}
            else:
                result = await inject(fault, fleet, admin, app_id)
            if "skipped" not in result:
                # From the server or process being back: every partition processed again.
                result |= timed("resumed_s", await progress_after(admin, app_id, max(10.0, spacing - 5)))

                async def recovered(baseline: float = baseline) -> bool:
                    return bool(samples) and samples[-1]["lag_raw"] <= baseline

                result["recovered_s"] = await wait_until(recovered, spacing - 5)
                result["lag_before"] = int(statistics.median(before))
            faults.append(result)
            print(json.dumps(result), flush=True)
        out, _ = await asyncio.to_thread(gen.communicate)
        load_end = time.monotonic()
        loadgen = json.loads(out)

        customers.stop.set()  # no more bookings: what they made is heard and stored meanwhile

        async def drained() -> bool:
            live = await group_lag(admin, app_id, T_RAW)
            store = f"{app_id}-store"
            booked = await group_lag(admin, app_id, T_BOOKED) + await group_lag(admin, store, T_BOOKED)
            return live == 0 and await group_lag(admin, store, T_CLEAN) == 0 == booked

        lag_zero_s = await wait_until(drained, 180)
        await customers.finish()
        sampler.cancel()
        supervisor.cancel()
        accepted = {}
        for line in accepted_file.read_text().splitlines():
            d, last, n = line.split()
            accepted[d] = (int(last), int(n))
        await asyncio.sleep(args.history_wait)  # the store's open buckets are written within history_flush_s
        checked = await verify(db_name, accepted)
        booked = await customers.check(S.mongo_dsn, db_name)
        return {
            "devices": args.devices,
            "kafka_profile": S.kafka_profile,
            "kafka": kafka,
            "api_processes": [n for n in fleet.initial if n not in fleet.live and n != "store"],
            "live_workers": len(fleet.live),
            "duration_s": args.duration,
            "faults": faults,
            "crashed": fleet.crashes,
            "loadgen": loadgen,
            "pings_accepted": sum(n for _, n in accepted.values()),
            **checked,
            "booking_notifications": booked,
            "lag_zero_after_load_s": lag_zero_s,
            "load_end_to_check_s": round(time.monotonic() - load_end, 1),
            "lag_raw_max": max(s["lag_raw"] for s in samples),
            "samples": samples,
        }
    finally:
        if supervisor is not None:
            supervisor.cancel()
        await admin.close()
        fleet.stop_all()
        nginx.terminate()
        nginx.wait(10)
        for svc in ("redis", "rabbitmq", "ferretdb", *([s.name for s in cluster.services] if cluster else [])):
            if not ours(svc):
                continue
            await asyncio.to_thread(Stack(S, only=[svc]).up)  # whatever happened, the stack is whole again
        await drop_app_topics(app_id, f"{app_id}-store")
        if cluster is not None and started_cluster:
            await asyncio.to_thread(Stack(S, only=started_cluster).down)  # as it found them
        from motor.motor_asyncio import AsyncIOMotorClient

        mongo = AsyncIOMotorClient(S.mongo_dsn)
        await mongo.drop_database(db_name)
        mongo.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=240)
    ap.add_argument("--period-min", type=float, default=1)
    ap.add_argument("--period-max", type=float, default=5)
    ap.add_argument("--apis", type=int, default=2, help="replicas of each API service")
    ap.add_argument("--split", action=argparse.BooleanOptionalAction, default=True,
                    help="one process per API service (auth, bookings, telemetry, notifications); "
                    "--no-split: processes that serve every router")  # fmt: skip
    ap.add_argument("--workers", type=int, default=2, help="live workers in the one consumer group")
    ap.add_argument("--customers", type=int, default=20, help="customers booking and cancelling, each on a socket")
    ap.add_argument("--nginx-port", type=int, default=8090)
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, in order, of {', '.join(FAULTS)}")
    ap.add_argument("--history-wait", type=float, default=15)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    unknown = set(args.faults.split(",")) - set(FAULTS) - {""}
    if unknown:
        ap.error(f"unknown faults {sorted(unknown)}")
    result = await run(args)
    result["command"] = "python -m benchmarks.chaos " + " ".join(sys.argv[1:])
    out = args.out or ROOT / "benchmarks" / "results" / f"chaos-{args.devices}.json"
    out.write_text(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1) + "\n")
    summary = {k: result[k] for k in ("pings_accepted", "lost", "duplicated", "state_behind", "lag_zero_after_load_s",
                                      "crashed")}  # fmt: skip
    booked = result["booking_notifications"]
    print(json.dumps({"summary": summary, "bookings": booked, "faults": result["faults"]}), flush=True)
    failed = result["lost"] or result["duplicated"] or result["state_behind"] or booked["missed"] or booked["repeated"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    asyncio.run(main())
