"""The reconnect storm: a notification replica with every socket on it killed, its clients back through nginx.

    python -m benchmarks.storm --sockets 10000 --rate 2000

Two notification API processes (``fleetstream api --service notifications``) behind an
nginx of this benchmark's own (``least_conn``, as ``fleetstream stack up`` writes it).
``--sockets`` customers connect through nginx while only replica B runs, so B holds them
all; then replica A starts and ``--bystanders`` more connect (to A). Messages flow all
along: ``--rate`` per second, each to one random customer, through the platform's own
notifier (``streams.fanout.Notifier``: replay stream in Redis, then RabbitMQ).

Then B is killed with ``-9``. Each of its clients reconnects through nginx, as the web
client does (after a random 0-``--backoff`` s), with ``?after=`` the greatest id it
received (the socket's first message, ``subscribed``, gives one even before any other).
Reported, from the kill, over B's clients:

- ``reconnected_s``: until its new socket was open;
- ``caught_up_s``: until it had received every message published to it before it was
  open again (the replay), or its reopening when it had missed nothing;
- ``all_caught_up_s``: the last of them; ``subscribed_s``: until replica A reported every
  socket subscribed (``fleetstream_notify_sockets``);
- and, over the whole run and every client, **missed** (published, never received) and
  **repeated** (received twice); and the bystanders' delivery latency during the storm.

Client sockets come from several 127.0.0.x addresses, so the storm does not run out of
ephemeral ports. Writes ``benchmarks/results/storm.json`` with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import websockets
from pydantic import BaseModel, Field

from api.notify import stream_id
from benchmarks.notify import S, raise_fd_limit, until_subscribed
from benchmarks.telemetry import ROOT, spawn, wait_http
from fleetstream.stack.nginx import render_conf
from schemas.contracts import customer_audience


class Tick(BaseModel):
    """A replayable notification, as the notifier takes one (a ``type`` and an ``event_id``)."""

    type: Literal["bench.tick"] = "bench.tick"
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(eq=False)
class Client:
    token: str
    scope: str
    source: str  # the 127.0.0.x it connects from
    last: str | None = None
    received: dict[str, float] = field(default_factory=dict)  # event id → when
    repeated: int = 0
    connects: int = 0
    closed_at: float | None = None
    reopened_at: float | None = None


async def run_client(c: Client, url: str, backoff: float, kill: asyncio.Event) -> None:
    while True:
        q = f"?token={c.token}" + (f"&after={c.last}" if c.last else "")
        try:
            async with websockets.connect(url + q, open_timeout=30, ping_interval=None, max_queue=None,
                                          local_addr=(c.source, 0)) as ws:  # fmt: skip
                c.connects += 1
                if c.closed_at is not None and c.reopened_at is None:
                    c.reopened_at = time.monotonic()
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg.get("type") == "subscribed" and msg.get("id"):  # a cursor before any message
                        c.last = msg["id"] if c.last is None else max(msg["id"], c.last, key=stream_id)
                    if msg.get("type") != "bench.tick":
                        continue
                    if msg["event_id"] in c.received:
                        c.repeated += 1
                    else:
                        c.received[msg["event_id"]] = time.monotonic()
                    c.last = msg["id"] if c.last is None else max(msg["id"], c.last, key=stream_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # closed, refused, reset: reconnect, as a browser would
            pass
        if kill.is_set() and c.closed_at is None:
            c.closed_at = time.monotonic()
        await asyncio.sleep(random.uniform(0, backoff))


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    v = sorted(xs)
    return round(v[min(len(v) - 1, int(len(v) * q))], 2)


async def run(args: argparse.Namespace) -> dict[str, object]:
    import aio_pika

    from api.security import issue_access_token
    from core.clients import redis_client
    from sinks.rabbitmq import RabbitSink
    from streams.fanout import Notifier

    tmp = S.home / "bench" / "storm"
    tmp.mkdir(parents=True, exist_ok=True)
    app_id = f"bench-storm-{uuid.uuid4().hex[:6]}"
    env = {"FLEETSTREAM_APP_ID": app_id, "FLEETSTREAM_MONGO_DB": app_id.replace("-", "_"),
           "FLEETSTREAM_NOTIFY_HEARTBEAT_S": "60"}  # fmt: skip
    cli = [sys.executable, "-m", "fleetstream.cli", "api", "--service", "notifications", "--port"]
    ports = {"A": args.api_port, "B": args.api_port + 1}
    apis: dict[str, subprocess.Popen[bytes]] = {}
    nginx_dir = tmp / "nginx"
    nginx_dir.mkdir(exist_ok=True)
    conf = nginx_dir / "nginx.conf"
    front = S.model_copy(update={"nginx_port": args.nginx_port, "nginx_client_rate": 1_000_000})
    ups = [f"127.0.0.1:{p}" for p in ports.values()]
    # Two nginx workers: each proxied socket is two descriptors, and a worker may hold 20,000.
    text = render_conf(front, nginx_dir, nginx_dir, {"auth": ups, "bookings": ups, "telemetry": ups,
                                                    "notifications": ups})  # fmt: skip
    conf.write_text(text.replace("worker_processes 1;", "worker_processes 2;"))
    nginx = spawn(["nginx", "-p", str(nginx_dir), "-c", str(conf), "-g", "daemon off;"], {}, tmp / "nginx.log")
    ws_url = f"ws://127.0.0.1:{args.nginx_port}/v1/notifications"
    redis = redis_client(S.redis_dsn, max_connections=16)
    rabbit = await aio_pika.connect_robust(S.rabbitmq_dsn)
    notifier = Notifier(redis, RabbitSink(rabbit))
    kill = asyncio.Event()
    published: dict[str, tuple[Client, float]] = {}  # event id → (to whom, when)
    stop = asyncio.Event()

    def make(n: int) -> list[Client]:
        out = []
        for i in range(n):
            user = f"u_storm{uuid.uuid4().hex[:10]}"
            out.append(Client(issue_access_token(S, user, "customer", 3600), customer_audience(user),
                              f"127.0.0.{2 + i % args.sources}"))  # fmt: skip
        return out

    async def publish(everyone: list[Client]) -> None:
        every = 0.05
        per = max(1, round(args.rate * every))
        nxt = time.monotonic()
        while not stop.is_set():
            batch = [(random.choice(everyone), Tick()) for _ in range(per)]
            now = time.monotonic()
            for c, t in batch:
                published[t.event_id] = (c, now)
            await notifier.send([([c.scope], t) for c, t in batch])
            nxt += every
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    tasks: list[asyncio.Task[None]] = []
    try:
        apis["B"] = spawn([*cli, str(ports["B"])], env, tmp / "api-B.log")
        wait_http(f"http://127.0.0.1:{ports['B']}/readyz")
        wait_http(f"http://127.0.0.1:{args.nginx_port}/healthz")
        storm = make(args.sockets)
        t0 = time.monotonic()
        sem = asyncio.Semaphore(200)

        async def opened(c: Client) -> None:
            async with sem:
                tasks.append(asyncio.create_task(run_client(c, ws_url, args.backoff, kill)))
                while c.connects == 0:  # noqa: ASYNC110 (the client's own loop sets it)
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(opened(c) for c in storm))
        connect_s = time.monotonic() - t0
        on_b = await until_subscribed(f"http://127.0.0.1:{ports['B']}", len(storm), 300)
        apis["A"] = spawn([*cli, str(ports["A"])], env, tmp / "api-A.log")
        wait_http(f"http://127.0.0.1:{ports['A']}/readyz")
        bystanders = make(args.bystanders)
        await asyncio.gather(*(opened(c) for c in bystanders))
        on_a = await until_subscribed(f"http://127.0.0.1:{ports['A']}", len(bystanders), 60)
        everyone = storm + bystanders
        pub = asyncio.create_task(publish(everyone))
        await asyncio.sleep(args.before)
        kill.set()
        t_kill = time.monotonic()
        apis["B"].kill()
        apis["B"].wait(10)
        subscribed = await until_subscribed(f"http://127.0.0.1:{ports['A']}", len(everyone), 120)
        subscribed_s = time.monotonic() - t_kill
        await asyncio.sleep(args.after)
        stop.set()
        await pub
        await asyncio.sleep(3)  # the last messages in flight
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        to_whom: dict[Client, list[tuple[str, float]]] = {}
        for e, (c, at) in published.items():
            to_whom.setdefault(c, []).append((e, at))
        moved = [c for c in storm if c.reopened_at is not None]
        reconnected = [c.reopened_at - t_kill for c in moved if c.reopened_at is not None]
        caught: list[float] = []
        for c in moved:
            assert c.reopened_at is not None
            due = [c.received.get(e) for e, at in to_whom.get(c, []) if at <= c.reopened_at]
            if any(t is None for t in due):
                continue  # missed: counted below
            caught.append(max([c.reopened_at, *(t for t in due if t is not None)]) - t_kill)
        missed = sum(1 for e, (to, _) in published.items() if e not in to.received)
        window_end = t_kill + max(caught, default=5.0)
        bystander_ms = [(c.received[e] - at) * 1000 for c in bystanders for e, at in to_whom.get(c, [])
                        if e in c.received and t_kill <= at <= window_end]  # fmt: skip
        return {
            "sockets_on_killed_replica": on_b,
            "connect_s": round(connect_s, 1),
            "bystanders_on_survivor": on_a,
            "rate_per_s": args.rate,
            "backoff_s": args.backoff,
            "moved": len(moved),
            "not_reconnected": len(storm) - len(moved),
            "reconnected_s": {"p50": pct(reconnected, 0.5), "p99": pct(reconnected, 0.99), "max": pct(reconnected, 1)},
            "caught_up_s": {"p50": pct(caught, 0.5), "p99": pct(caught, 0.99), "max": pct(caught, 1)},
            "all_caught_up_s": round(max(caught), 2) if caught else None,
            "subscribed_on_survivor": subscribed,
            "subscribed_s": round(subscribed_s, 2),
            "published": len(published),
            "missed": missed,
            "repeated": sum(c.repeated for c in everyone),
            "bystander_latency_during_storm_ms": {
                "samples": len(bystander_ms),
                "p50": round(statistics.median(bystander_ms), 1) if bystander_ms else None,
                "p99": pct(bystander_ms, 0.99),
            },
        }
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        for p in apis.values():
            p.terminate()
        for p in apis.values():
            p.wait(30)
        nginx.terminate()
        nginx.wait(10)
        await rabbit.close()
        await redis.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sockets", type=int, default=10_000, help="customers on the replica that is killed")
    ap.add_argument("--bystanders", type=int, default=500, help="customers on the replica that survives")
    ap.add_argument("--rate", type=float, default=2000, help="notifications per second, to random customers")
    ap.add_argument("--backoff", type=float, default=1.0, help="a client waits 0 to this many seconds to reconnect")
    ap.add_argument("--before", type=float, default=10, help="seconds of messages before the kill")
    ap.add_argument("--after", type=float, default=15, help="seconds of messages after it")
    ap.add_argument("--sources", type=int, default=8, help="client source addresses 127.0.0.2 ...")
    ap.add_argument("--api-port", type=int, default=8077)
    ap.add_argument("--nginx-port", type=int, default=8091)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "storm.json")
    args = ap.parse_args()
    raise_fd_limit()
    from core.runtime import tune_gc

    tune_gc()
    result = await run(args)
    result = {"command": "python -m benchmarks.storm " + " ".join(sys.argv[1:]), **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1), flush=True)
    sys.exit(1 if result["missed"] or result["repeated"] else 0)


if __name__ == "__main__":
    asyncio.run(main())
