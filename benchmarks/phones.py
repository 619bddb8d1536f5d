"""The phone-fleet profile: many devices, one ping per request, through nginx.

    python -m benchmarks.phones --devices 2000 --duration 60 --period-min 1 --period-max 5

``--devices`` are registered (one device token each); the first ``--active`` of them post
(all by default), each one fix per request every period (drawn per device from
``--period-min``…``--period-max`` s, jittered); about 5 % send one catch-up batch of
10-200 pings after a simulated gap. The load generator is a compiled Go client
(``benchmarks/phonefleet``, built here with the machine's Go) in its own process, whose
CPU is counted; it posts over keep-alive HTTP through an nginx of its own in front of
``--apis`` API processes. ``--format osmand`` posts the OsmAnd protocol instead;
``--transport ws`` keeps one telemetry WebSocket per device open and sends each fix
as a message on it, waiting for its ack (latency is then send → ack).

Reports requests/s and pings/s accepted, pings/s processed (driver state: the live
worker's driver_state step; history: stored in MongoDB), p50/p99 post → 202, the lag on
``telemetry.raw`` over time and the CPU of each process (and in core-µs per ping).
Writes ``benchmarks/results/phones-<devices>.json`` with the command. The batched profile
stays in ``benchmarks.telemetry``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.telemetry import (
    ROOT,
    T_RAW,
    S,
    commit_end_offsets,
    drop_app_topics,
    group_lag,
    metric,
    proc_usage,
    project_topics,
    spawn,
    stack_processes,
    wait_http,
)
from fleetstream.stack.nginx import render_conf

CLIENT_SRC = ROOT / "benchmarks" / "phonefleet"


def build_client() -> Path:
    """The Go load generator, rebuilt when its source is newer than the binary."""
    out = S.home / "cache" / "phonefleet"
    newest = max(p.stat().st_mtime for p in CLIENT_SRC.iterdir())
    if not out.exists() or out.stat().st_mtime < newest:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-o", str(out), "."], cwd=CLIENT_SRC, check=True)
    return out


async def issue_tokens(url: str, ids: list[str], concurrency: int = 32) -> dict[str, str]:
    from api.security import admin_token

    admin = {"Authorization": f"Bearer {admin_token(S)}"}
    tokens: dict[str, str] = {}
    queue = list(ids)
    async with httpx.AsyncClient(timeout=60) as c:

        async def issue() -> None:
            while queue:
                d = queue.pop()
                r = await c.post(f"{url}/v1/drivers/{d}/devices", headers=admin)
                r.raise_for_status()
                tokens[d] = r.json()["token"]

        await asyncio.gather(*(issue() for _ in range(concurrency)))
    return tokens


async def run(args: argparse.Namespace) -> dict[str, object]:
    tmp = S.home / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    client = build_client()
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    db_name = f"bench_{app_id.replace('-', '_')}"
    env = {"FLEETSTREAM_APP_ID": app_id, "FLEETSTREAM_MONGO_DB": db_name, "FLEETSTREAM_WORKER_WEB_PORT": "6071",
           "FLEETSTREAM_DEVICE_TOKEN_CACHE_S": "300"}  # fmt: skip
    from streams.topics import ensure_topics

    await ensure_topics(S)
    topics = project_topics()
    await commit_end_offsets(app_id, topics)
    await commit_end_offsets(f"{app_id}-store", topics)
    live = "clean,driver_state,geofence,publish,eta"
    worker = spawn([sys.executable, "-m", "fleetstream.cli", "worker", "--loglevel", "warning",
                    "--agents", live, "--web-port", "6071"], env, tmp / "worker.log")  # fmt: skip
    store = spawn([sys.executable, "-m", "fleetstream.cli", "worker", "--loglevel", "warning", "--agents", "store",
                   "--app-id", f"{app_id}-store", "--web-port", "6073"], env, tmp / "store.log")  # fmt: skip
    api_ports = [8081 + i for i in range(args.apis)]
    apis = [spawn([sys.executable, "-m", "fleetstream.cli", "api", "--port", str(p)], env, tmp / f"api{p}.log")
            for p in api_ports]  # fmt: skip
    nginx_dir = tmp / "nginx"
    nginx_dir.mkdir(exist_ok=True)
    conf = nginx_dir / "nginx.conf"
    # The per-client limit as high as it goes: issuing the fleet's tokens is one admin client.
    front = S.model_copy(update={"api_port": api_ports[0], "api_replicas": args.apis, "nginx_port": args.nginx_port,
                                 "nginx_client_rate": 1_000_000})  # fmt: skip
    conf.write_text(render_conf(front, nginx_dir, nginx_dir))
    nginx = spawn(["nginx", "-p", str(nginx_dir), "-c", str(conf), "-g", "daemon off;"], {}, tmp / "nginx.log")
    url = f"http://127.0.0.1:{args.nginx_port}"
    admin_client = AIOKafkaAdminClient(bootstrap_servers=S.kafka_servers)
    try:
        for p in ("6071", "6073"):
            wait_http(f"http://127.0.0.1:{p}/ready")
        for p in api_ports:
            wait_http(f"http://127.0.0.1:{p}/readyz")
        wait_http(f"{url}/healthz")
        ids = [f"ph{i:06d}-{app_id[-6:]}" for i in range(args.devices)]
        t_tokens = time.monotonic()
        tokens = await issue_tokens(url, ids)
        token_s = time.monotonic() - t_tokens
        active = ids[: args.active or args.devices]
        tokfile = tmp / "phone-tokens.txt"
        tokfile.write_text("".join(f"{d} {tokens[d]}\n" for d in active))
        await admin_client.start()
        procs = {"worker": psutil.Process(worker.pid), "store": psutil.Process(store.pid),
                 **{f"api{i}": psutil.Process(a.pid) for i, a in enumerate(apis)},
                 "nginx": psutil.Process(nginx.pid), **stack_processes()}  # fmt: skip
        cmd = [str(client), "--url", url, "--tokens", str(tokfile), "--duration", f"{args.duration}s",
               "--period-min", f"{args.period_min}s", "--period-max", f"{args.period_max}s",
               "--catchup", str(args.catchup), "--format", args.format, "--conns", str(args.conns),
               "--transport", args.transport]  # fmt: skip
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE)  # noqa: ASYNC220 (one child, read at the end)
        procs["loadgen"] = psutil.Process(gen.pid)
        proc_usage(procs)
        t0 = time.monotonic()
        samples: list[dict[str, object]] = []
        last = {"t": t0, "stored": 0, "state": 0}
        drain_until = None
        while True:
            await asyncio.sleep(args.sample)
            now = time.monotonic()
            stored = await metric("http://127.0.0.1:6073/metrics", "fleetstream_pings_stored_total")
            state = await metric_label("http://127.0.0.1:6071/metrics", "fleetstream_agent_pings_total", "driver_state")
            dt = now - last["t"]
            sample = {
                "t": round(now - t0, 1),
                "state_per_s": round((state - last["state"]) / dt),
                "stored_per_s": round((stored - last["stored"]) / dt),
                "lag_raw_records": await group_lag(admin_client, app_id, T_RAW),
                "usage": {k: (round(c), round(m)) for k, (c, m) in proc_usage(procs).items()},
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)
            last = {"t": now, "stored": stored, "state": state}
            if gen.poll() is not None:
                drain_until = drain_until or now + 60
                if sample["lag_raw_records"] < 2000 or now > drain_until:
                    break
        out, _ = gen.communicate()
        loadgen = json.loads(out)
        steady = [s for s in samples if 5 < float(s["t"]) <= args.duration]  # type: ignore[arg-type]
        usage = {k: statistics.median(s["usage"][k][0] for s in steady if k in s["usage"]) for k in procs}  # type: ignore[index]
        pings_s = float(loadgen["pings_accepted_per_s"]) or 1.0
        return {
            "devices": args.devices,
            "active": len(active),
            "apis": args.apis,
            "format": args.format,
            "transport": args.transport,
            "token_issue_s": round(token_s, 1),
            "loadgen": loadgen,
            "state_per_s_median": statistics.median(s["state_per_s"] for s in steady),
            "stored_per_s_median": statistics.median(s["stored_per_s"] for s in steady),
            "lag_raw_max": max(s["lag_raw_records"] for s in samples),
            "lag_raw_first_last_steady": [steady[0]["lag_raw_records"], steady[-1]["lag_raw_records"]],
            "cpu_pct_median": usage,
            "cpu_core_us_per_accepted_ping": {k: round(v / 100 * 1e6 / pings_s, 1) for k, v in usage.items()},
            "samples": samples,
        }
    finally:
        await admin_client.close()
        for p in [worker, store, *apis, nginx]:
            p.terminate()
        for p in [worker, store, *apis, nginx]:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:  # never leave one behind on the next run's ports
                p.kill()
                p.wait(10)
        await drop_app_topics(app_id, f"{app_id}-store")
        from motor.motor_asyncio import AsyncIOMotorClient

        mongo = AsyncIOMotorClient(S.mongo_dsn)
        await mongo.drop_database(db_name)  # a benchmark leaves no history behind
        mongo.close()


async def metric_label(url: str, name: str, label: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            text = (await c.get(url)).text
    except httpx.ConnectError:
        return 0
    want = f'{name}{{agent="{label}"}} '
    return int(sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(want)))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--active", type=int, default=0, help="devices that post (default: all)")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--period-min", type=float, default=1.0)
    ap.add_argument("--period-max", type=float, default=5.0)
    ap.add_argument("--catchup", type=float, default=0.05)
    ap.add_argument("--format", choices=("json", "osmand"), default="json")
    ap.add_argument(
        "--transport",
        choices=("http", "ws"),
        default="http",
        help="http: one POST per fix; ws: one telemetry WebSocket per device, one message per fix",
    )
    ap.add_argument("--apis", type=int, default=1, help="API processes behind nginx")
    ap.add_argument("--conns", type=int, default=256, help="load generator keep-alive connections")
    ap.add_argument("--nginx-port", type=int, default=8090)
    ap.add_argument("--sample", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    live = await run(args)
    result = {"machine": {"cores": psutil.cpu_count(), "mem_gib": round(psutil.virtual_memory().total / 2**30)},
              "command": "python -m benchmarks.phones " + " ".join(sys.argv[1:]), "live": live}  # fmt: skip
    out = args.out or ROOT / "benchmarks" / "results" / f"phones-{args.devices}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in live.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
