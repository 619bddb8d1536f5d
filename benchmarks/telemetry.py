"""Telemetry throughput on this machine, end to end and against a raw aiokafka loop.

    python -m benchmarks.telemetry --duration 60 --drivers 500 --batch 50

Phase 1 (live): simulated devices post batches over HTTP for ``--duration`` seconds
while a Faust worker runs every agent; samples pings/s accepted by the API, pings/s
stored in MongoDB (fully processed), consumer lag and CPU/RSS of each process.

Phase 2 (overhead): the backlog of phase 1 is processed again from offset 0 twice,
(a) by a Faust worker running only clean + driver_state + store, and (b) by a plain
aiokafka loop doing the same clean + Redis + MongoDB work (benchmarks/raw_pipeline.py),
each into a fresh database; the ratio of their rates is Faust's overhead.

Every process is started here and stopped at the end; the stack must be up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psutil
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from motor.motor_asyncio import AsyncIOMotorClient

from benchmarks.http1 import Connection, auth_header
from core.config import get_settings
from core.kafka import make_consumer
from schemas.contracts import TELEMETRY_CLEAN, TELEMETRY_RAW, TOPICS

ROOT = Path(__file__).resolve().parent.parent
# Its own topics (bench.telemetry.raw, ...): the demo's consumer groups never see this load.
os.environ.setdefault("FLEETSTREAM_TOPIC_NAMESPACE", "bench")
os.environ.setdefault("FLEETSTREAM_REDIS_DB", "2")  # and its own Redis database (streams/reservations.py keys)
get_settings.cache_clear()
S = get_settings()
T_RAW, T_CLEAN = S.topic(TELEMETRY_RAW.name), S.topic(TELEMETRY_CLEAN.name)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(args, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                            start_new_session=True)  # fmt: skip


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready")


def project_topics(*leave_out: str) -> list[str]:
    """Every project topic of the namespace: a benchmark's group starts at their end.

    Left at "earliest", the store's booking agent of a telemetry run replayed every booking
    event the notify benchmarks had left in ``bench.bookings.events`` into FerretDB (half
    its CPU, 9 s per write), and the replay's Faust worker did the same.
    """
    return [S.topic(t.name) for t in TOPICS if S.topic(t.name) not in leave_out]


async def commit_end_offsets(group: str, topics: list[str]) -> None:
    c = make_consumer(S, group_id=group)
    await c.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(S.telemetry_partitions)]
        c.assign(tps)
        await c.commit(await c.end_offsets(tps))
    finally:
        await c.stop()


async def drop_app_topics(*app_ids: str) -> int:
    """Delete the changelog and assignor topics Faust made for these app ids.

    Every run uses a fresh app id, so each left ~8 topics of 8 partitions behind; after a
    day of runs the one broker held 2,000+ partitions and later runs measured a slower
    Kafka, not the code.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=S.kafka_servers)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if any(t.startswith(f"{a}-") for a in app_ids)]
        if mine:
            await admin.delete_topics(mine)
        return len(mine)
    finally:
        await admin.close()


async def group_lag(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    tps = [TopicPartition(topic, p) for p in range(S.telemetry_partitions)]
    committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    c = make_consumer(S)
    await c.start()
    try:
        ends = await c.end_offsets(tps)
    finally:
        await c.stop()
    return sum(max(0, ends[tp] - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0))
               for tp in tps)  # fmt: skip


class Devices:
    """Drivers moving on a straight line; each post is one batch of a driver's next pings."""

    def __init__(self, n: int, batch: int, spread: bool = False) -> None:
        self.ids = [f"bench-{uuid.uuid4().hex[:6]}-{i}" for i in range(n)]
        self.batch = batch
        #: --zones: drivers start anywhere in the zones' 12 x 12 km square and move 10 m a fix
        #: (Tile38's report's workload); else 1.1 m a fix from a 1 km square.
        self.spread, self.step = spread, (9e-5 if spread else 1e-5)
        self.seq = dict.fromkeys(self.ids, 0)
        self.start = datetime.now(UTC) - timedelta(hours=1)
        self._iso: dict[int, str] = {}

    def iso(self, s: int) -> str:
        # Every driver walks the same seq/ts sequence: format each instant once (the load
        # generator shares the two cores with what it measures).
        t = self._iso.get(s)
        if t is None:
            t = self._iso[s] = (self.start + timedelta(seconds=s)).isoformat()
        return t

    def body(self, d: str) -> bytes:
        s0 = self.seq[d]
        self.seq[d] = s0 + self.batch
        if self.spread:
            lat0, lon0 = 52.45 + hash(d) % 1000 / 1000 * 0.1, 13.30 + hash(d + "x") % 1000 / 1000 * 0.17
        else:
            lat0 = lon0 = hash(d) % 1000 / 10000
            lat0, lon0 = 52.4 + lat0, 13.3 + lon0
        pings = [
            {"seq": s, "ts": self.iso(s), "lat": lat0 + s * self.step,
             "lon": lon0, "accuracy_m": 5.0, "speed_mps": 10.0 if self.spread else 1.1, "heading_deg": 0.0}
            for s in range(s0, s0 + self.batch)
        ]  # fmt: skip
        return orjson.dumps({"pings": pings})


async def load(url: str, devices: Devices, tokens: dict[str, str], duration: float, conc: int,
               stats: dict[str, int], rate: float | None = None) -> None:  # fmt: skip
    """``conc`` senders, each on its own keep-alive connection (``benchmarks/http1.py``, lighter than aiohttp)."""
    deadline = time.monotonic() + duration
    host, port = url.removeprefix("http://").split(":")
    auth = {d: auth_header(t) for d, t in tokens.items()}

    async def worker(i: int) -> None:
        conn = Connection(host, int(port))
        mine = devices.ids[i::conc]
        k = 0
        # Open loop at a target rate: each of the `conc` senders posts every `every` seconds.
        every = conc * devices.batch / rate if rate else 0.0
        next_t = time.monotonic() + (i * every / conc if every else 0.0)
        try:
            while time.monotonic() < deadline:
                if every:
                    await asyncio.sleep(max(0.0, next_t - time.monotonic()))
                    next_t += every
                d = mine[k % len(mine)]
                k += 1
                if await conn.post(b"/v1/telemetry", devices.body(d), auth[d]) == 202:
                    stats["accepted"] += devices.batch
                else:
                    stats["errors"] += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker(i) for i in range(conc)))


async def metric(url: str, name: str) -> int:
    """A counter from a worker's /metrics (counting in FerretDB takes seconds per call); 0 while it starts."""
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            text = (await c.get(url)).text
    except httpx.ConnectError:
        return 0
    return int(sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")))


async def stored_pings(db) -> int:  # type: ignore[no-untyped-def]
    """Exact number of stored pings (sum over buckets); used once at the end."""
    rows = await db.tracks.aggregate([{"$group": {"_id": None, "n": {"$sum": "$n"}}}]).to_list(1)
    return int(rows[0]["n"]) if rows else 0


_CHILDREN: dict[int, psutil.Process] = {}


def proc_usage(procs: dict[str, psutil.Process]) -> dict[str, tuple[float, float]]:
    """CPU % (since the last call) and RSS of each process with its children.

    Children are kept between calls: ``cpu_percent(None)`` of a fresh ``Process`` object is
    always 0, which had counted RabbitMQ (its Erlang VM is a child of the launcher) as idle.
    """
    out = {}
    for name, p in procs.items():
        try:
            # Not the load generator's: its children are the workers and the API, counted on their own.
            kids = [] if p.pid == os.getpid() else [_CHILDREN.setdefault(c.pid, c) for c in p.children(recursive=True)]
            with p.oneshot():
                cpu, rss = p.cpu_percent(None), p.memory_info().rss
            for c in kids:
                with contextlib.suppress(psutil.Error):
                    cpu, rss = cpu + c.cpu_percent(None), rss + c.memory_info().rss
            out[name] = (cpu, rss / 2**20)
        except psutil.Error:
            pass
    return out


def stack_processes() -> dict[str, psutil.Process]:
    procs = {}
    for name in ("kafka", "redis", "rabbitmq", "ferretdb"):
        try:
            pid = int((S.home / "run" / f"{name}.pid").read_text().split()[0])
            procs[name] = psutil.Process(pid)
        except (OSError, ValueError, psutil.Error):
            pass
    return procs


async def live_phase(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    db_name = f"bench_{app_id.replace('-', '_')}"
    env = {
        "FLEETSTREAM_APP_ID": app_id,
        "FLEETSTREAM_MONGO_DB": db_name,
        "FLEETSTREAM_WORKER_WEB_PORT": "6071",
        "FLEETSTREAM_DEVICE_TOKEN_CACHE_S": "300",
    }
    if args.zones:  # zones first: the live workers load them as they start
        from benchmarks.zones import zone_doc

        rnd = random.Random(17)
        docs = [zone_doc(i, rnd) for i in range(args.zones)]
        zmongo = AsyncIOMotorClient(S.mongo_dsn)
        for i in range(0, len(docs), 200):
            await zmongo[db_name].zones.insert_many(docs[i : i + 200])
        zmongo.close()
        print(f"{args.zones} zones in {db_name}", flush=True)
    topics = project_topics()
    await commit_end_offsets(app_id, topics)
    await commit_end_offsets(f"{app_id}-store", topics)
    # As `fleetstream demo` runs it: live path and MongoDB history in two consumer groups.
    # --workers N: the live agents as N processes of one consumer group (each its own web port).
    worker_ports = [6071 + 4 * i for i in range(args.workers)]
    live_workers = [
        spawn([sys.executable, "-m", "fleetstream.cli", "worker", "--loglevel", "warning",
               "--agents", "clean,driver_state,geofence,publish,eta", "--web-port", str(port)],
              env, tmp / f"worker{i or ''}.log")
        for i, port in enumerate(worker_ports)
    ]  # fmt: skip
    store = spawn(
        [sys.executable, "-m", "fleetstream.cli", "worker", "--loglevel", "warning", "--agents", "store",
         "--app-id", f"{app_id}-store", "--web-port", "6073"], env, tmp / "store.log"
    )  # fmt: skip
    api_port = 8071
    apis = [spawn([sys.executable, "-m", "fleetstream.cli", "api", "--port", str(api_port)], env, tmp / "api.log")]
    url = f"http://127.0.0.1:{api_port}"
    try:
        for port in worker_ports:
            wait_http(f"http://127.0.0.1:{port}/ready")
        wait_http("http://127.0.0.1:6073/ready")
        wait_http(f"{url}/readyz")
        from api.security import admin_token

        devices = Devices(args.drivers, args.batch, spread=args.zones > 0)
        admin = {"Authorization": f"Bearer {admin_token(S)}"}
        async with httpx.AsyncClient(timeout=30) as c:
            tokens = {}
            for d in devices.ids:
                tokens[d] = (await c.post(f"{url}/v1/drivers/{d}/devices", headers=admin)).json()["token"]
        mongo = AsyncIOMotorClient(S.mongo_dsn)
        admin_client = AIOKafkaAdminClient(bootstrap_servers=S.kafka_servers)
        await admin_client.start()
        procs = {**{f"worker{i or ''}": psutil.Process(w.pid) for i, w in enumerate(live_workers)},
                 "store": psutil.Process(store.pid),
                 "api": psutil.Process(apis[0].pid),
                 "loadgen": psutil.Process(os.getpid()), **stack_processes()}  # fmt: skip
        proc_usage(procs)
        stats = {"accepted": 0, "errors": 0}
        samples: list[dict[str, object]] = []
        t0 = time.monotonic()
        load_task = asyncio.create_task(load(url, devices, tokens, args.duration, args.concurrency, stats, args.rate))
        last_acc, last_stored, last_t = 0, 0, t0
        drain_deadline = None
        while True:
            await asyncio.sleep(args.sample)
            now = time.monotonic()
            stored = await metric("http://127.0.0.1:6073/metrics", "fleetstream_pings_stored_total")
            lag_raw = await group_lag(admin_client, app_id, T_RAW)
            lag_clean = await group_lag(admin_client, f"{app_id}-store", T_CLEAN)
            sample = {
                "t": round(now - t0, 1),
                "accepted_per_s": round((stats["accepted"] - last_acc) / (now - last_t)),
                "stored_per_s": round((stored - last_stored) / (now - last_t)),
                "lag_raw_records": lag_raw,
                "lag_clean_records": lag_clean,
                "usage": {k: (round(c), round(m)) for k, (c, m) in proc_usage(procs).items()},
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)
            last_acc, last_stored, last_t = stats["accepted"], stored, now
            if load_task.done():
                drain_deadline = drain_deadline or now + 120
                if stored >= stats["accepted"] or now > drain_deadline:
                    break
        await load_task
        done_t = time.monotonic() - t0
        stored = await stored_pings(mongo[db_name])
        await admin_client.close()
        await mongo.drop_database(db_name)  # a benchmark leaves no history behind
        mongo.close()
        steady = [s for s in samples if s["t"] <= args.duration][1:]
        return {
            "app_id": app_id,
            "drivers": args.drivers,
            "workers": args.workers,
            "target_rate": args.rate,
            "batch": args.batch,
            "zones": args.zones,
            "duration_s": args.duration,
            "accepted_pings": stats["accepted"],
            "http_errors": stats["errors"],
            "stored_pings": stored,
            "accepted_per_s_median": statistics.median([s["accepted_per_s"] for s in steady]),
            "stored_per_s_median": statistics.median([s["stored_per_s"] for s in steady]),
            "all_stored_after_s": round(done_t, 1),
            "lag_raw_max": max(s["lag_raw_records"] for s in samples),
            "lag_clean_max": max(s["lag_clean_records"] for s in samples),
            "lag_raw_at_end_of_load": next((s["lag_raw_records"] for s in reversed(steady)), None),
            "usage_median_cpu_pct_rss_mib": {k: _median_usage(steady, k) for k in procs},
            "samples": samples,
        }
    finally:
        for p in [*live_workers, store, *apis]:
            p.terminate()
        for p in [*live_workers, store, *apis]:
            p.wait(30)
        await drop_app_topics(app_id, f"{app_id}-store")


def _median_usage(samples: list[dict[str, object]], name: str) -> tuple[float, float]:
    rows = [s["usage"][name] for s in samples if name in s["usage"]]  # type: ignore[index,operator]
    return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)


async def replay_phase(tmp: Path, backlog: int) -> dict[str, object]:
    """The same backlog through Faust (3 agents) and through the raw loop; rate of each."""
    results = {}
    for mode in ("faust", "raw"):
        app_id = f"replay-{mode}-{uuid.uuid4().hex[:6]}"
        db_name = app_id.replace("-", "_")
        env = {"FLEETSTREAM_APP_ID": app_id, "FLEETSTREAM_MONGO_DB": db_name, "FLEETSTREAM_WORKER_WEB_PORT": "6072",
               "FLEETSTREAM_CONSUMER_OFFSET_RESET": "earliest"}  # fmt: skip
        # Start both at the backlog: the last `backlog` pings of telemetry.raw are what phase 1 wrote.
        await commit_end_offsets(app_id, project_topics(T_RAW))
        await start_group_before_end(app_id, T_RAW, backlog)
        if mode == "faust":
            cmd = [sys.executable, "-m", "fleetstream.cli", "worker", "--agents", "clean,driver_state,store",
                   "--loglevel", "warning"]  # fmt: skip
        else:
            cmd = [sys.executable, "-m", "benchmarks.raw_pipeline"]
        progress = tmp / "raw-progress"
        progress.unlink(missing_ok=True)
        env["RAW_PROGRESS_FILE"] = str(progress)
        proc = spawn(cmd, env, tmp / f"replay-{mode}.log")
        mongo = AsyncIOMotorClient(S.mongo_dsn)
        t0 = time.monotonic()
        ps = psutil.Process(proc.pid)
        ps.cpu_percent(None)
        cpu: list[float] = []
        rss: list[float] = []
        first_t = None
        try:
            count = 0
            while time.monotonic() - t0 < 600:
                await asyncio.sleep(1)
                if mode == "faust":
                    count = await metric("http://127.0.0.1:6072/metrics", "fleetstream_pings_stored_total")
                else:
                    count = int(progress.read_text() or 0) if progress.exists() else 0
                cpu.append(ps.cpu_percent(None))
                rss.append(ps.memory_info().rss / 2**20)
                if count and first_t is None:
                    first_t = time.monotonic()
                if count >= backlog:
                    break
            took = time.monotonic() - (first_t or t0)
            count = await stored_pings(mongo[db_name])
            results[mode] = {"pings": count, "seconds_from_first_write": round(took, 1),
                             "pings_per_s": round(count / took), "cpu_pct_median": statistics.median(cpu),
                             "rss_mib_max": round(max(rss))}  # fmt: skip
            print(json.dumps({mode: results[mode]}), flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
            await mongo.drop_database(db_name)
            mongo.close()
            await drop_app_topics(app_id)
    results["faust_over_raw_throughput"] = round(results["faust"]["pings_per_s"] / results["raw"]["pings_per_s"], 2)
    return results


async def start_group_before_end(group: str, topic: str, pings: int) -> None:
    """Commit offsets so the group starts where the last ``pings`` of its benchmark run began."""
    c = make_consumer(S, group_id=group)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(S.telemetry_partitions)]
        c.assign(tps)
        starts = json.loads((S.home / "bench-start-offsets.json").read_text())
        await c.commit({tp: int(starts[str(tp.partition)]) for tp in tps})
    finally:
        await c.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--drivers", type=int, default=500)
    ap.add_argument("--batch", type=int, default=50, help="pings per HTTP request")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rate", type=float, default=None, help="target pings/s (default: as fast as possible)")
    ap.add_argument("--workers", type=int, default=1, help="live-agent worker processes (one consumer group)")
    ap.add_argument("--sample", type=float, default=5.0)
    ap.add_argument("--skip-replay", action="store_true")
    ap.add_argument(
        "--zones",
        type=int,
        default=0,
        help="geofences (benchmarks/zones.py's: Tile38's density over 12 x 12 km), drivers among them",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "telemetry.json")
    args = ap.parse_args()
    tmp = S.home / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    # Remember where telemetry.raw ends now: phase 2 replays exactly what phase 1 adds.
    c = make_consumer(S)
    await c.start()
    from streams.topics import ensure_topics

    await ensure_topics(S)
    tps = [TopicPartition(T_RAW, p) for p in range(S.telemetry_partitions)]
    ends = await c.end_offsets(tps)
    await c.stop()
    (S.home / "bench-start-offsets.json").write_text(json.dumps({str(tp.partition): o for tp, o in ends.items()}))
    live = await live_phase(args, tmp)
    result = {"machine": {"cores": psutil.cpu_count(), "mem_gib": round(psutil.virtual_memory().total / 2**30)},
              "command": " ".join(sys.argv), "live": live}  # fmt: skip
    if not args.skip_replay:
        result["replay"] = await replay_phase(tmp, int(live["accepted_pings"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in live.items() if k != "samples"}
    print(json.dumps({"live": summary, "replay": result.get("replay")}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
