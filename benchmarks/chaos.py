"""Faults under the phone-fleet load, one after another, and what was lost.

    python -m benchmarks.chaos --devices 2000 --duration 240

The phone fleet of :mod:`benchmarks.phones` (one fix per request, through an nginx of its
own in front of ``--apis`` API processes, a live worker and a store worker), with clients
that resend a fix not answered 202 (no answer, 429, 5xx) as it was, as phones do. While it
runs, evenly spaced:

- ``worker``: ``kill -9`` of the live worker, started again 2 s later;
- ``api``: ``kill -9`` of one API replica, started again 2 s later (nginx fails over);
- ``redis``, ``rabbitmq``, ``ferretdb``: the stack's server stopped and started again
  (only a stack this checkout started: ``fleetstream stack up``).

Then it lets the workers drain and checks every device: each fix answered 202 is in the
history exactly once (**lost**, **duplicated**), and its live state is its last accepted
fix (**state_behind**). Per fault: how long the server or process was away, and how long
after it was back the live lag fell to what it was before the fault (``recovered_s``).
Writes ``benchmarks/results/chaos-<devices>.json`` with the command. A Kafka broker's death
needs the cluster profile (``fleetstream stack up --profile cluster``), not run here yet.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

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
from schemas.contracts import driver_key

FAULTS = ("worker", "api", "redis", "rabbitmq", "ferretdb")
LIVE_AGENTS = "clean,driver_state,geofence,publish,eta"


class Fleet:
    """The processes under test, each one restartable with the command it was started with."""

    def __init__(self, tmp: Path, env: dict[str, str], apis: int) -> None:
        self.tmp, self.env = tmp, env
        self.api_ports = [8081 + i for i in range(apis)]
        self.commands: dict[str, list[str]] = {
            "worker": [sys.executable, "-m", "fleetstream.cli", "worker", "--loglevel", "warning",
                       "--agents", LIVE_AGENTS, "--web-port", "6071"],
            "store": [sys.executable, "-m", "fleetstream.cli", "worker", "--loglevel", "warning", "--agents", "store",
                      "--app-id", f"{env['FLEETSTREAM_APP_ID']}-store", "--web-port", "6073"],
            **{f"api{p}": [sys.executable, "-m", "fleetstream.cli", "api", "--port", str(p)] for p in self.api_ports},
        }  # fmt: skip
        self.ready = {"worker": "http://127.0.0.1:6071/ready", "store": "http://127.0.0.1:6073/ready",
                      **{f"api{p}": f"http://127.0.0.1:{p}/readyz" for p in self.api_ports}}  # fmt: skip
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = {}

    def start(self, name: str) -> None:
        n = self.starts.get(name, 0)
        self.starts[name] = n + 1
        self.procs[name] = spawn(self.commands[name], self.env, self.tmp / f"{name}-{n}.log")

    def wait_ready(self, name: str) -> None:
        wait_http(self.ready[name])

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait(10)

    def stop_all(self) -> None:
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


async def inject(fault: str, fleet: Fleet) -> dict[str, Any]:
    """Do one fault; returns when what it took away is back, with how long that was."""
    t0 = time.monotonic()
    if fault == "worker" or fault == "api":
        name = "worker" if fault == "worker" else f"api{fleet.api_ports[-1]}"
        fleet.kill(name)
        await asyncio.sleep(2)
        fleet.start(name)
        await asyncio.to_thread(fleet.wait_ready, name)
    else:
        if not ours(fault):
            return {"fault": fault, "skipped": "the stack's server was not started from this checkout"}
        stack = Stack(S, only=[fault])
        await asyncio.to_thread(stack.down)
        await asyncio.sleep(2)
        await asyncio.to_thread(stack.up)
    return {"fault": fault, "away_s": round(time.monotonic() - t0, 1)}


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
        if await check():
            return round(time.monotonic() - t0, 1)
        await asyncio.sleep(every)
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = S.home / "bench" / "chaos"
    tmp.mkdir(parents=True, exist_ok=True)
    client = build_client()
    app_id = f"chaos-{uuid.uuid4().hex[:6]}"
    db_name = f"bench_{app_id.replace('-', '_')}"
    env = {"FLEETSTREAM_APP_ID": app_id, "FLEETSTREAM_MONGO_DB": db_name, "FLEETSTREAM_DEVICE_TOKEN_CACHE_S": "300",
           "FLEETSTREAM_WORKER_WEB_PORT": "6071"}  # fmt: skip
    from streams.topics import ensure_topics

    await ensure_topics(S)
    topics = project_topics()
    await commit_end_offsets(app_id, topics)
    await commit_end_offsets(f"{app_id}-store", topics)
    fleet = Fleet(tmp, env, args.apis)
    for name in fleet.commands:
        fleet.start(name)
    nginx_dir = tmp / "nginx"
    nginx_dir.mkdir(exist_ok=True)
    conf = nginx_dir / "nginx.conf"
    front = S.model_copy(update={"api_port": fleet.api_ports[0], "api_replicas": args.apis,
                                 "nginx_port": args.nginx_port, "nginx_client_rate": 1_000_000})  # fmt: skip
    conf.write_text(render_conf(front, nginx_dir, nginx_dir))
    nginx = spawn(["nginx", "-p", str(nginx_dir), "-c", str(conf), "-g", "daemon off;"], {}, tmp / "nginx.log")
    url = f"http://127.0.0.1:{args.nginx_port}"
    admin = AIOKafkaAdminClient(bootstrap_servers=S.kafka_servers)
    faults: list[dict[str, Any]] = []
    try:
        for name in fleet.commands:
            fleet.wait_ready(name)
        wait_http(f"{url}/healthz")
        ids = [f"cx{i:06d}-{app_id[-6:]}" for i in range(args.devices)]
        tokens = await issue_tokens(url, ids)
        tokfile, accepted_file = tmp / "tokens.txt", tmp / "accepted.txt"
        tokfile.write_text("".join(f"{d} {tokens[d]}\n" for d in ids))
        await admin.start()
        cmd = [str(client), "--url", url, "--tokens", str(tokfile), "--duration", f"{args.duration}s",
               "--period-min", f"{args.period_min}s", "--period-max", f"{args.period_max}s", "--catchup", "0",
               "--retry", "--grace", "90s", "--accepted", str(accepted_file)]  # fmt: skip
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE)  # noqa: ASYNC220 (one child, read at the end)
        t0 = time.monotonic()
        samples: list[dict[str, Any]] = []

        async def sample() -> None:
            while True:
                lag = await group_lag(admin, app_id, T_RAW)
                samples.append({"t": round(time.monotonic() - t0, 1), "lag_raw": lag})
                await asyncio.sleep(1)

        sampler = asyncio.create_task(sample())
        chosen = [f for f in args.faults.split(",") if f]
        spacing = (args.duration - 20) / max(1, len(chosen))
        for i, fault in enumerate(chosen):
            at = 15 + i * spacing
            await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
            before = [s["lag_raw"] for s in samples[-5:]] or [0]
            baseline = statistics.median(before) + args.devices  # a second of fixes over the usual
            result = await inject(fault, fleet)
            if "skipped" not in result:

                async def recovered(baseline: float = baseline) -> bool:
                    return bool(samples) and samples[-1]["lag_raw"] <= baseline

                result["recovered_s"] = await wait_until(recovered, spacing - 5)
                result["lag_before"] = int(statistics.median(before))
            faults.append(result)
            print(json.dumps(result), flush=True)
        out, _ = await asyncio.to_thread(gen.communicate)
        load_end = time.monotonic()
        loadgen = json.loads(out)

        async def drained() -> bool:
            live = await group_lag(admin, app_id, T_RAW)
            return live == 0 and await group_lag(admin, f"{app_id}-store", T_CLEAN) == 0

        lag_zero_s = await wait_until(drained, 180)
        sampler.cancel()
        accepted = {}
        for line in accepted_file.read_text().splitlines():
            d, last, n = line.split()
            accepted[d] = (int(last), int(n))
        await asyncio.sleep(args.history_wait)  # the store's open buckets are written within history_flush_s
        checked = await verify(db_name, accepted)
        return {
            "devices": args.devices,
            "apis": args.apis,
            "duration_s": args.duration,
            "faults": faults,
            "loadgen": loadgen,
            "pings_accepted": sum(n for _, n in accepted.values()),
            **checked,
            "lag_zero_after_load_s": lag_zero_s,
            "load_end_to_check_s": round(time.monotonic() - load_end, 1),
            "lag_raw_max": max(s["lag_raw"] for s in samples),
            "samples": samples,
        }
    finally:
        await admin.close()
        fleet.stop_all()
        nginx.terminate()
        nginx.wait(10)
        for svc in ("redis", "rabbitmq", "ferretdb"):
            if not ours(svc):
                continue
            await asyncio.to_thread(Stack(S, only=[svc]).up)  # whatever happened, the stack is whole again
        await drop_app_topics(app_id, f"{app_id}-store")
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
    ap.add_argument("--apis", type=int, default=2)
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
    summary = {k: result[k] for k in ("pings_accepted", "lost", "duplicated", "state_behind", "lag_zero_after_load_s")}
    print(json.dumps({"summary": summary, "faults": result["faults"]}), flush=True)
    sys.exit(1 if result["lost"] or result["duplicated"] or result["state_behind"] else 0)


if __name__ == "__main__":
    asyncio.run(main())
