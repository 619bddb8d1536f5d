"""The notification layer: many sockets on one API process, delivery rate, ping → socket latency.

    python -m benchmarks.notify --sockets 10000 --messages 100000 --rate 5000 --seconds 30

Phase 1 (fan-out): ``--sockets`` customer sockets connect to ONE API process (each
authenticated with its own access token; the process binds one routing pattern per
socket on its own RabbitMQ queue); RSS of the API process before and after gives the
memory per connection. Then ``--messages`` messages are published to the exchange, each
routed to one random customer, and the rate at which the sockets receive them is the
delivery rate.

Phase 2 (latency): ``--jobs`` customers book through the real API; as many drivers are
matched and accept; while background drivers post telemetry so that the total is
``--rate`` pings/s, each job driver posts one fix per second. The time from posting a
fix to receiving the ETA update that carries its position on the customer's socket is
the end-to-end latency (API → Kafka → clean → eta → Kafka → publish → Redis + RabbitMQ
→ API → socket). ETA updates are emitted for every fix here (``eta_max_interval_s=0``).

Every process is started here (worker, API) in the ``bench`` topic namespace with its
own database, and stopped at the end; the stack must be up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import resource
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiohttp
import httpx
import orjson
import psutil
import websockets

from schemas.contracts import EXCHANGE, audience_key, customer_audience

os.environ.setdefault("FLEETSTREAM_TOPIC_NAMESPACE", "bench")
os.environ.setdefault("FLEETSTREAM_REDIS_DB", "2")  # and its own Redis database (streams/reservations.py keys)

from benchmarks.http1 import Pool, auth_header
from benchmarks.telemetry import commit_end_offsets, drop_app_topics, project_topics, spawn, wait_http
from core.config import get_settings

get_settings.cache_clear()
S = get_settings()
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "benchmark password"


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def open_sockets(url: str, tokens: list[str], counts: dict[str, int], sources: int = 1) -> list[object]:
    """``sources`` > 1 spreads the sockets over 127.0.0.1..N: one source address has ~28,000 ports."""
    sockets: list[object] = []
    readers: set[asyncio.Task[None]] = set()
    sem = asyncio.Semaphore(200)

    async def one(i: int, token: str) -> None:
        async with sem:
            ws = await websockets.connect(f"{url}/v1/notifications?token={token}", open_timeout=60,
                                          ping_interval=None, max_queue=None,
                                          local_addr=(f"127.0.0.{1 + i % sources}", 0))  # fmt: skip
            sockets.append(ws)

            async def read() -> None:
                try:
                    async for raw in ws:
                        msg = orjson.loads(raw)
                        if msg.get("type") not in ("heartbeat", "subscribed"):
                            counts["received"] += 1
                except websockets.ConnectionClosed:
                    counts["closed"] += 1

            task = asyncio.create_task(read())
            readers.add(task)
            task.add_done_callback(readers.discard)

    await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
    return sockets


def metrics_auth() -> dict[str, str]:
    from api.security import admin_token

    return {"Authorization": f"Bearer {admin_token(S)}"}


async def until_subscribed(url: str, want: int, timeout: float) -> int:
    """The API's own count of subscribed sockets, polled until it reaches ``want``."""
    deadline = time.monotonic() + timeout
    have = 0
    async with httpx.AsyncClient(timeout=10) as c:
        while time.monotonic() < deadline:
            for line in (await c.get(f"{url}/metrics", headers=metrics_auth())).text.splitlines():
                if line.startswith("fleetstream_notify_sockets "):
                    have = int(float(line.split()[1]))
            if have >= want:
                break
            await asyncio.sleep(0.5)
    return have


async def fanout_phase(args: argparse.Namespace, url: str, api: psutil.Process) -> dict[str, object]:
    from api.security import issue_access_token

    users = [f"u_bench{uuid.uuid4().hex[:10]}" for _ in range(args.sockets)]
    tokens = [issue_access_token(S, u, "customer", 3600) for u in users]
    rss0 = api.memory_info().rss
    counts = {"received": 0, "closed": 0}
    t0 = time.monotonic()
    sockets = await open_sockets(url.replace("http", "ws"), tokens, counts, args.sources)
    connect_s = time.monotonic() - t0
    # A socket is open before the server has bound its routing key; a message published in
    # between is unroutable. Wait until the API reports every socket subscribed.
    subscribed = await until_subscribed(url, len(sockets), timeout=300)
    subscribed_s = time.monotonic() - t0
    await asyncio.sleep(3)
    rss1 = api.memory_info().rss
    connection = await aio_pika.connect_robust(S.rabbitmq_dsn)
    channel = await connection.channel()
    exchange = await channel.get_exchange(EXCHANGE)
    body = orjson.dumps({"type": "bench", "payload": "x" * 200})
    t1 = time.monotonic()
    for i in range(0, args.messages, 500):
        keys = [
            audience_key(customer_audience(random.choice(users)), "bench") for _ in range(min(500, args.messages - i))
        ]
        await asyncio.gather(*(exchange.publish(aio_pika.Message(body), routing_key=k) for k in keys))
    published_s = time.monotonic() - t1
    deadline = time.monotonic() + 120
    while counts["received"] < args.messages and time.monotonic() < deadline:  # noqa: ASYNC110 (polling a counter)
        await asyncio.sleep(0.05)
    delivered_s = time.monotonic() - t1
    api_cpu = api.cpu_percent(None)
    await connection.close()
    for ws in sockets:
        await ws.close()  # type: ignore[attr-defined]
    return {
        "sockets": len(sockets),
        "connect_s": round(connect_s, 1),
        "subscribed": subscribed,
        "subscribed_s": round(subscribed_s, 1),
        "api_rss_before_mib": round(rss0 / 2**20, 1),
        "api_rss_with_sockets_mib": round(rss1 / 2**20, 1),
        "rss_per_socket_kib": round((rss1 - rss0) / len(sockets) / 1024, 1),
        "messages": args.messages,
        "received": counts["received"],
        "closed_early": counts["closed"],
        "publish_s": round(published_s, 1),
        "delivered_per_s": round(counts["received"] / delivered_s),
        "api_cpu_pct_since_start": api_cpu,
    }


async def customer(c: httpx.AsyncClient, i: int) -> str:
    email = f"bench{i}.{uuid.uuid4().hex[:6]}@example.com"
    await c.post("/v1/auth/register", json={"email": email, "password": PASSWORD, "name": f"c{i}"})
    r = await c.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    return str(r.json()["access_token"])


async def latency_phase(args: argparse.Namespace, url: str, worker_pid: int, api_pid: int) -> dict[str, object]:
    from api.security import admin_token

    admin = {"Authorization": f"Bearer {admin_token(S)}"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        # One job per driver, each in its own spot (10 km apart), so matching is unambiguous.
        jobs = []
        for i in range(args.jobs):
            lat, lon = -45.0 + (i // 20) * 0.1, -120.0 + (i % 20) * 0.1
            d = f"bench-job-{uuid.uuid4().hex[:8]}"
            tok = (await c.post(f"/v1/drivers/{d}/devices", headers=admin)).json()["token"]
            auth = {"Authorization": f"Bearer {tok}"}
            ping = {"seq": 1, "ts": datetime.now(UTC).isoformat(), "lat": lat + 0.001, "lon": lon, "accuracy_m": 5.0}
            await c.post("/v1/telemetry", json={"pings": [ping]}, headers=auth)
            jobs.append({"driver": d, "auth": auth, "lat": lat, "lon": lon, "seq": 1,
                         "token": await customer(c, i)})  # fmt: skip
        await asyncio.sleep(2)
        for j in jobs:
            cust = {"Authorization": f"Bearer {j['token']}"}
            body = {"pickup": {"lat": j["lat"], "lon": j["lon"]}, "dropoff": {"lat": j["lat"] + 0.02, "lon": j["lon"]}}
            j["booking"] = (await c.post("/v1/bookings", json=body, headers=cust)).json()["booking_id"]
        deadline = time.monotonic() + 60
        waiting = list(jobs)
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            still = []
            for j in waiting:
                r = await c.post(f"/v1/bookings/{j['booking']}/accept", headers=j["auth"])
                if r.status_code != 200:
                    still.append(j)
            waiting = still
        assigned = [j for j in jobs if j not in waiting]

        sent: dict[tuple[str, float], tuple[float, float]] = {}
        latencies: list[float] = []
        when: list[float] = []
        # Where the time goes, per sample (wall clock, one machine): post → 202 (API + Kafka acks=all),
        # post → the ETA's occurred_at (+ consume + clean + eta step), occurred_at → socket (Redis + RabbitMQ + API).
        hops: dict[str, list[float]] = {"ingest": [], "to_eta": [], "eta_to_socket": []}
        samples: list[tuple[float, float, float]] = []  # seconds into the probing, total ms, post → eta ms
        begin = time.monotonic() + 1e9

        async def listen(j: dict[str, object]) -> None:
            ws_url = url.replace("http", "ws") + f"/v1/notifications?token={j['token']}"
            async with websockets.connect(ws_url, ping_interval=None) as ws:
                async for raw in ws:
                    m = orjson.loads(raw)
                    if m.get("type") == "eta.update":
                        got = sent.pop((str(m["driver_id"]), round(float(m["lat"]), 7)), None)
                        if got is not None:
                            t, wall = got
                            latencies.append(time.monotonic() - t)
                            when.append(t)
                            at = datetime.fromisoformat(str(m["at"])).timestamp()
                            hops["to_eta"].append(at - wall)
                            hops["eta_to_socket"].append(time.time() - at)
                            samples.append((round(t - begin, 2), round((time.monotonic() - t) * 1000, 1),
                                            round((at - wall) * 1000, 1)))  # fmt: skip

        listeners = [asyncio.create_task(listen(j)) for j in assigned]
        await asyncio.sleep(2)
        background = await background_drivers(c, admin, args)
        stop = time.monotonic() + args.warmup + args.seconds
        begin = time.monotonic() + args.warmup
        # In a process of its own: the probes' clock must not wait behind the load's HTTP client.
        bg_task = asyncio.create_task(asyncio.to_thread(load_in_child, background, args, stop - time.monotonic()))

        async def probe(j: dict[str, object], session: aiohttp.ClientSession) -> None:
            await asyncio.sleep(random.uniform(0, 1))  # probes spread over the second, as phones would be
            k = 0
            while time.monotonic() < stop:
                k += 1
                j["seq"] = int(j["seq"]) + 1  # type: ignore[call-overload]
                lat = round(float(j["lat"]) + 0.001 + 0.0001 * k, 7)  # type: ignore[arg-type]
                ping = {"seq": j["seq"], "ts": datetime.now(UTC).isoformat(), "lat": lat, "lon": j["lon"],
                        "accuracy_m": 5.0, "speed_mps": 8.0}  # fmt: skip
                body = orjson.dumps({"pings": [ping]})
                headers = {**j["auth"], "Content-Type": "application/json"}  # type: ignore[dict-item]
                t0 = time.monotonic()
                sent[(str(j["driver"]), lat)] = (t0, time.time())
                async with session.post(f"{url}/v1/telemetry", data=body, headers=headers) as r:
                    await r.read()
                hops["ingest"].append(time.monotonic() - t0)
                await asyncio.sleep(1.0)

        # One session made before the clock starts: a client per probe, built while others were
        # already measuring, held the probes' loop for ~1.5 s (an artifact counted as latency).
        procs = {"worker": psutil.Process(worker_pid), "api": psutil.Process(api_pid)}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await asyncio.sleep(args.warmup)  # 500 drivers coming online at once is a start-up burst, not load
            for pr in procs.values():
                pr.cpu_percent(None)
            psutil.cpu_percent(None)
            await asyncio.gather(*(probe(j, session) for j in assigned))
            cpu = {k: pr.cpu_percent(None) for k, pr in procs.items()}
            ages = await record_ages("http://127.0.0.1:6074/metrics")
            cpu["machine_total_of_200"] = psutil.cpu_percent(None) * psutil.cpu_count()
        posted = await bg_task
        await asyncio.sleep(5)
        for t in listeners:
            t.cancel()
    slow_at = sorted(round(w - begin, 1) for w, x in zip(when, latencies, strict=True) if x > 0.5)
    lat_ms = sorted(x * 1000 for x in latencies)
    return {
        "jobs": len(assigned),
        "background_pings_per_s": round(posted / (args.warmup + args.seconds)),
        "latency_samples": len(lat_ms),
        "latency_p50_ms": round(statistics.median(lat_ms), 1) if lat_ms else None,
        "latency_p90_ms": round(lat_ms[max(0, int(len(lat_ms) * 0.90) - 1)], 1) if lat_ms else None,
        "latency_p95_ms": round(lat_ms[max(0, int(len(lat_ms) * 0.95) - 1)], 1) if lat_ms else None,
        "latency_p99_ms": round(lat_ms[max(0, int(len(lat_ms) * 0.99) - 1)], 1) if lat_ms else None,
        "latency_max_ms": round(lat_ms[-1], 1) if lat_ms else None,
        "hops_ms": {k: percentiles(v) for k, v in hops.items()},
        "cpu_pct_while_probing": cpu,
        "worker_histograms": ages,
        "over_500ms_at_s": slow_at[:50],  # seconds into the phase: a burst or spread out?
        "samples": sorted(samples),
    }


async def record_ages(url: str) -> dict[str, int]:
    """The worker's histograms (whole run, cumulative counts): record age at batch start, loop lag, and the
    durations of the telemetry batch, its clean step and its ETA step."""
    async with httpx.AsyncClient(timeout=10) as c:
        text = (await c.get(url)).text
    wanted = {("fleetstream_record_age_seconds_bucket", "telemetry"): "record_age",
              ("fleetstream_record_received_age_seconds_bucket", "telemetry"): "received_age",
              ("fleetstream_loop_lag_seconds_bucket", None): "loop_lag",
              ("fleetstream_step_seconds_bucket", "clean"): "step_clean",
              ("fleetstream_step_seconds_bucket", "eta"): "step_eta",
              ("fleetstream_step_seconds_bucket", "batch"): "step_batch"}  # fmt: skip
    out = {}
    for line in text.splitlines():
        m = re.match(r"(\w+)\{(.*)\} (\S+)$", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))  # prometheus_client sorts them: le first
        name = wanted.get((m.group(1), labels.get("agent") or labels.get("step")))
        if name and "le" in labels:
            out[f"{name}<={labels['le']}s"] = int(float(m.group(3)))
    return out


def percentiles(xs: list[float]) -> dict[str, float] | None:
    """p50/p90/p99 in ms of seconds."""
    if not xs:
        return None
    v = sorted(x * 1000 for x in xs)
    return {f"p{q}": round(v[max(0, int(len(v) * q / 100) - 1)], 1) for q in (50, 90, 99)}


async def background_drivers(c: httpx.AsyncClient, admin: dict[str, str], args: argparse.Namespace) -> list[dict]:
    out = []
    for _ in range(args.background_drivers):
        d = f"bench-bg-{uuid.uuid4().hex[:8]}"
        tok = (await c.post(f"/v1/drivers/{d}/devices", headers=admin)).json()["token"]
        out.append({"driver": d, "auth": {"Authorization": f"Bearer {tok}"}, "token": tok, "seq": 0,
                    "lat": random.uniform(-60, -50), "lon": random.uniform(-100, -90)})  # fmt: skip
    return out


def load_in_child(drivers: list[dict], args: argparse.Namespace, seconds: float) -> int:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return int(pool.apply(_child_load, (drivers, args, seconds)))


def _child_load(drivers: list[dict], args: argparse.Namespace, seconds: float) -> int:
    return asyncio.run(background_load(drivers, args, time.monotonic() + seconds))


async def background_load(drivers: list[dict], args: argparse.Namespace, stop: float) -> int:
    """Open-loop telemetry of drivers without jobs, batches of ``--bg-batch``, at ``--rate`` pings/s.

    Through ``benchmarks/http1.py``, not aiohttp or httpx: the load shares the two cores with
    what it measures (httpx spent twice aiohttp's CPU per request; with this client the
    telemetry benchmark's load generator took 12 % CPU where it took 20 % with aiohttp).
    """
    batch = args.bg_batch
    every = len(drivers) * batch / args.rate
    posted = 0
    pool = Pool("127.0.0.1", args.api_port, 64)
    try:

        async def one(d: dict) -> None:
            nonlocal posted
            nxt = time.monotonic() + random.uniform(0, every)
            while nxt < stop:  # not `now < stop`: the last sleep would post once past the end
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
                nxt += every
                now = datetime.now(UTC).timestamp()
                pings = []
                for i in range(batch):
                    d["seq"] += 1
                    ts = datetime.fromtimestamp(now - (batch - i) * 0.1, UTC).isoformat()
                    pings.append({"seq": d["seq"], "ts": ts, "lat": d["lat"], "lon": d["lon"] + d["seq"] * 1e-6,
                                  "accuracy_m": 5.0})  # fmt: skip
                body = orjson.dumps({"pings": pings})
                if await pool.post(b"/v1/telemetry", body, auth_header(d["token"])) == 202:
                    posted += batch

        await asyncio.gather(*(one(d) for d in drivers))
    finally:
        pool.close()
    return posted


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--background-drivers", type=int, default=500)
    ap.add_argument("--rate", type=float, default=5000, help="background pings/s during the latency phase")
    ap.add_argument("--seconds", type=float, default=30)
    # Each background driver first posts within one period (drivers x batch / rate = 5 s at the
    # defaults), after the load's own process has started (~1.5 s): with a 5 s warm-up the probes'
    # first second still overlapped 500 drivers coming online, and all 40 first probes took 60-150 ms.
    ap.add_argument("--warmup", type=float, default=10, help="seconds of background load before the probes start")
    ap.add_argument("--bg-batch", type=int, default=50, help="pings per background request (a phone's batch)")
    ap.add_argument("--api-port", type=int, default=8075)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "notify.json")
    ap.add_argument("--sources", type=int, default=1, help="client source addresses 127.0.0.1..N")
    ap.add_argument("--phases", default="fanout,latency", help="which phases to run, comma-separated")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    raise_fd_limit()
    from core.runtime import tune_gc

    tune_gc()  # the client holds 10,000 sockets too: same collector settings as the API it measures
    from streams.topics import ensure_topics

    await ensure_topics(S)
    app_id = f"bench-notify-{uuid.uuid4().hex[:6]}"
    tmp = S.home / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"FLEETSTREAM_APP_ID": app_id, "FLEETSTREAM_MONGO_DB": app_id.replace("-", "_"),
           "FLEETSTREAM_WORKER_WEB_PORT": "6074", "FLEETSTREAM_ETA_MAX_INTERVAL_S": "0",
           "FLEETSTREAM_MATCH_WINDOW_S": "0.5", "FLEETSTREAM_DEVICE_TOKEN_CACHE_S": "300",
           "FLEETSTREAM_LOGIN_MAX_ATTEMPTS_PER_ADDRESS": "1000000", "FLEETSTREAM_OFFER_TIMEOUT_S": "120",
           "FLEETSTREAM_NOTIFY_HEARTBEAT_S": "60"}  # fmt: skip
    await commit_end_offsets(app_id, project_topics())
    worker = spawn([sys.executable, "-m", "fleetstream.cli", "worker", "--loglevel", "warning", "--agents",
                    "clean,driver_state,publish,bookings,matching,eta"], env, tmp / "notify-worker.log")  # fmt: skip
    api = spawn([sys.executable, "-m", "fleetstream.cli", "api", "--port", str(args.api_port)], env,
                tmp / "notify-api.log")  # fmt: skip
    url = f"http://127.0.0.1:{args.api_port}"
    try:
        wait_http("http://127.0.0.1:6074/ready")
        wait_http(f"{url}/readyz")
        api_proc = psutil.Process(api.pid)
        api_proc.cpu_percent(None)
        result: dict[str, object] = {"command": " ".join(sys.argv),
                                     "machine": {"cores": psutil.cpu_count()}}  # fmt: skip
        if "fanout" in phases:
            result["fanout"] = await fanout_phase(args, url, api_proc)
            print(json.dumps(result["fanout"]), flush=True)
        if "latency" in phases:
            result["latency"] = await latency_phase(args, url, worker.pid, api.pid)
            print(json.dumps(result["latency"]), flush=True)
    finally:
        for p in (worker, api):
            p.terminate()
        for p in (worker, api):
            p.wait(30)
        await drop_app_topics(app_id)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
