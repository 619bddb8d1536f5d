"""Driver telemetry end to end on the real stack: API → Kafka → agents → Redis, MongoDB, RabbitMQ."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import websockets
from motor.motor_asyncio import AsyncIOMotorClient

from api.notify import unbatch
from core.config import Settings
from schemas import DeadLetter, DriverStatusEvent, GeofenceEvent, GpsPing, TelemetryBatch, encode
from schemas.contracts import LOCATIONS_KEY
from schemas.track import bucket_pings
from tests.conftest import Pipeline, Proc, TopicTail, _status, free_port, wait_for

pytestmark = pytest.mark.usefixtures("stack")


def track(n: int, seq0: int = 0, t0: datetime | None = None, lat0: float = 52.50, lon0: float = 13.40,
          dlat: float = 0.0002, dt: float = 2.0) -> list[dict[str, Any]]:  # fmt: skip
    """A plausible drive: ~22 m north every 2 s."""
    t0 = t0 or datetime.now(UTC) - timedelta(seconds=n * dt)
    return [
        {"seq": seq0 + i, "ts": (t0 + timedelta(seconds=i * dt)).isoformat(), "lat": lat0 + i * dlat, "lon": lon0,
         "accuracy_m": 5.0, "speed_mps": 11.0, "heading_deg": 0.0}
        for i in range(n)
    ]  # fmt: skip


async def post(client: httpx.AsyncClient, p: Pipeline, token: str, pings: list[dict[str, Any]]) -> httpx.Response:
    return await client.post(f"{p.url}/v1/telemetry", json={"pings": pings}, headers=p.headers(token))


async def stored_seqs(db, driver: str) -> list[int]:  # type: ignore[no-untyped-def]
    """Every stored ping's seq for a driver, duplicates included (buckets flattened).

    Buckets are found through the Redis bucket directory and fetched by ``_id``: a query
    by driver scans the whole collection on FerretDB (seconds once a machine has a history).
    """
    r = aioredis.from_url(Settings().redis_dsn)
    try:
        ids = [i.decode() for i in await r.zrange(f"track:{driver}:seq", 0, -1)]
    finally:
        await r.aclose()
    docs = [await db.tracks.find_one({"_id": i}) for i in ids]
    assert all(d is not None for d in docs), "the directory lists a bucket MongoDB does not have"
    return [p["seq"] for d in docs for p in bucket_pings(d)]


async def eventually(check, timeout: float = 30.0, interval: float = 0.3):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(interval)


@pytest.fixture
async def mongo(stack: Settings):  # type: ignore[no-untyped-def]
    client: AsyncIOMotorClient = AsyncIOMotorClient(stack.mongo_dsn, tz_aware=True)
    yield client[stack.mongo_db]
    client.close()


@pytest.fixture
async def rds(stack: Settings):  # type: ignore[no-untyped-def]
    r = aioredis.from_url(stack.redis_dsn, decode_responses=True)
    yield r
    await r.aclose()


async def test_http_pings_reach_redis_api_mongo_rabbit_and_fences(
    pipeline: Pipeline, stack: Settings, mongo, rds, uid: str
) -> None:  # type: ignore[no-untyped-def]
    driver = f"e2e-{uid}"
    token = pipeline.device_token(driver)
    admin = pipeline.headers(pipeline.admin)
    conn = await aio_pika.connect_robust(stack.rabbitmq_dsn)
    ch = await conn.channel()
    ex = await ch.declare_exchange("fleetstream.events", aio_pika.ExchangeType.TOPIC, durable=True)
    q = await ch.declare_queue(exclusive=True)
    await q.bind(ex, routing_key=f"driver.{driver}.#")
    await q.bind(ex, routing_key=LOCATIONS_KEY)  # locations travel batched (the hub splits them)
    async with httpx.AsyncClient(timeout=20) as client, TopicTail(stack, "geofence.events") as fences:
        # A zone 100 m around the point the driver reaches at ping 20.
        zone = await client.post(
            f"{pipeline.url}/v1/zones",
            headers=admin,
            json={"name": f"depot {uid}", "tags": ["depot"],
                  "circle": {"center": {"lat": 52.504, "lon": 13.40}, "radius_m": 100}},
        )  # fmt: skip
        assert zone.status_code == 201, zone.text
        zone_id = zone.json()["zone_id"]
        await asyncio.sleep(1.5)  # workers read zones:changes every second

        pings = track(40)
        for i in range(0, 40, 10):
            r = await post(client, pipeline, token, pings[i : i + 10])
            assert r.status_code == 202, r.text
            assert r.json() == {"accepted": 10, "rejected": []}

        async def state() -> dict[str, Any] | None:
            r = await client.get(f"{pipeline.url}/v1/drivers/{driver}", headers=pipeline.headers(token))
            return r.json() if r.status_code == 200 and r.json()["seq"] == 39 else None

        live = await eventually(state)
        assert live, "driver state never reached seq 39"
        assert live["lat"] == pytest.approx(pings[-1]["lat"]) and live["lon"] == pytest.approx(13.40)
        assert live["speed_mps"] == 11.0 and live["status"] in ("online", "offline")
        assert (await rds.hget(f"driver:{driver}", "seq")) == "39"

        near = await client.get(
            f"{pipeline.url}/v1/drivers/nearby", params={"lat": 52.5078, "lon": 13.40, "radius_m": 300}, headers=admin
        )
        assert near.status_code == 200
        assert driver in [d["driver_id"] for d in near.json()] or live["status"] == "offline"

        async def stored() -> int:
            return len(await stored_seqs(mongo, driver))

        assert await eventually(lambda: _ge(stored, 40)), "pings not all in MongoDB"
        page1 = await client.get(f"{pipeline.url}/v1/drivers/{driver}/track", params={"limit": 25},
                                 headers=pipeline.headers(token))  # fmt: skip
        body = page1.json()
        assert [p["seq"] for p in body["pings"]] == list(range(25)) and body["next_after_seq"] == 24
        page2 = await client.get(f"{pipeline.url}/v1/drivers/{driver}/track",
                                 params={"limit": 25, "after_seq": 24}, headers=pipeline.headers(token))  # fmt: skip
        assert [p["seq"] for p in page2.json()["pings"]] == list(range(25, 40))
        assert page2.json()["next_after_seq"] is None
        newest = await client.get(f"{pipeline.url}/v1/drivers/{driver}/track", params={"limit": 25, "order": "desc"},
                                  headers=pipeline.headers(token))  # fmt: skip
        assert [p["seq"] for p in newest.json()["pings"]] == list(range(39, 14, -1))
        older = await client.get(f"{pipeline.url}/v1/drivers/{driver}/track",
                                 params={"limit": 25, "order": "desc", "cursor": newest.json()["next_cursor"]},
                                 headers=pipeline.headers(token))  # fmt: skip
        assert [p["seq"] for p in older.json()["pings"]] == list(range(14, -1, -1))
        naive = await client.get(f"{pipeline.url}/v1/drivers/{driver}/track", params={"from": "2026-01-01T00:00:00"},
                                 headers=pipeline.headers(token))  # fmt: skip
        assert naive.status_code == 422
        window = await client.get(f"{pipeline.url}/v1/drivers/{driver}/track",
                                  params={"from": pings[10]["ts"], "to": pings[20]["ts"]},
                                  headers=pipeline.headers(token))  # fmt: skip
        assert [p["seq"] for p in window.json()["pings"]] == list(range(10, 20))
        # The Redis bucket directory and the plain MongoDB query agree.
        from sinks.mongo import read_track

        via_index = await read_track(mongo, driver, cursor=5, limit=30, redis=rds)
        via_query = await read_track(mongo, driver, cursor=5, limit=30)
        assert [p["seq"] for p in via_index] == [p["seq"] for p in via_query] == list(range(6, 36))

        events = await fences.collect(
            lambda v: isinstance(v, GeofenceEvent) and v.driver_id == driver and v.zone_id == zone_id, count=2
        )
        assert [(e.type, e.zone_id) for e in events] == [("geofence.enter", zone_id), ("geofence.exit", zone_id)]
        stored_fences = {"driver_id": driver, "zone_id": zone_id}
        assert await eventually(lambda: _ge(lambda: mongo.geofence_events.count_documents(stored_fences), 2))
        # The zone's events through the API, newest first: staff only.
        served = await client.get(f"{pipeline.url}/v1/zones/{zone_id}/events", headers=admin)
        assert served.status_code == 200, served.text
        assert [(e["type"], e["driver_id"]) for e in served.json()] == [
            ("geofence.exit", driver),
            ("geofence.enter", driver),
        ]
        assert (
            await client.get(f"{pipeline.url}/v1/zones/{zone_id}/events", headers=pipeline.headers(token))
        ).status_code == 403
        assert (await client.delete(f"{pipeline.url}/v1/zones/{zone_id}", headers=admin)).status_code == 204

    got: dict[str, list[dict[str, Any]]] = {}
    async with q.iterator(timeout=15) as it:
        async for m in it:
            async with m.process():
                for key, body in unbatch(m.routing_key or "", orjson.loads(m.body)):
                    got.setdefault(key, []).append(body)
            fence_msgs = [e for e in got.get(f"driver.{driver}.geofence", []) if e["zone_id"] == zone_id]
            if f"driver.{driver}.location" in got and f"driver.{driver}.status" in got and len(fence_msgs) >= 2:
                break
    await conn.close()
    assert got[f"driver.{driver}.location"][-1]["lat"] <= pings[-1]["lat"]
    mine = [e["type"] for e in got[f"driver.{driver}.geofence"] if e["zone_id"] == zone_id]
    assert mine == ["geofence.enter", "geofence.exit"]
    assert f"driver.{driver}.status" in got  # came online


async def _ge(count, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await count()) >= n


async def _len(coro) -> int:  # type: ignore[no-untyped-def]
    return len(await coro)


async def test_websocket_ingest_acks_each_batch(pipeline: Pipeline, mongo, uid: str) -> None:  # type: ignore[no-untyped-def]
    driver = f"ws-{uid}"
    token = pipeline.device_token(driver)
    ws_url = pipeline.url.replace("http", "ws") + f"/v1/telemetry/stream?token={token}"
    pings = track(6)
    async with websockets.connect(ws_url) as ws:
        await ws.send(orjson.dumps({"batch_id": "b1", "pings": pings[:3]}))
        ack1 = orjson.loads(await ws.recv())
        bad = {**pings[4], "lat": 123.0}
        await ws.send(orjson.dumps({"batch_id": "b2", "pings": [pings[3], bad, pings[5]]}))
        ack2 = orjson.loads(await ws.recv())
        await ws.send(b"not json")
        ack3 = orjson.loads(await ws.recv())
    assert ack1 == {"batch_id": "b1", "status": 202, "accepted": 3, "rejected": []}
    assert ack2["batch_id"] == "b2" and ack2["status"] == 422 and ack2["accepted"] == 2
    assert ack2["rejected"][0]["index"] == 1 and ack2["rejected"][0]["reasons"][0]["field"] == "lat"
    assert ack3["status"] == 422 and ack3["accepted"] == 0
    assert await eventually(lambda: _ge(lambda: _len(stored_seqs(mongo, driver)), 5))
    assert sorted(await stored_seqs(mongo, driver)) == [0, 1, 2, 3, 5]

    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(pipeline.url.replace("http", "ws") + "/v1/telemetry/stream?token=nope"):
            pass


async def test_a_websocket_message_over_the_limit_closes_that_socket_only(pipeline: Pipeline, uid: str) -> None:
    """``ws_max_size`` (1 MiB; uvicorn's own is 16 MiB): a full batch fits, a larger message ends its socket."""
    token = pipeline.device_token(f"wsmax-{uid}")
    ws_url = pipeline.url.replace("http", "ws") + f"/v1/telemetry/stream?token={token}"
    full = orjson.dumps({"batch_id": "full", "pings": track(pipeline.settings.max_batch_pings)})
    async with websockets.connect(ws_url, max_size=None) as ws, websockets.connect(ws_url) as other:
        await ws.send(full)
        assert orjson.loads(await ws.recv())["accepted"] == pipeline.settings.max_batch_pings
        await ws.send(b" " * (pipeline.settings.ws_max_size + 1))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
        await other.send(orjson.dumps({"batch_id": "other", "pings": track(1)}))
        assert orjson.loads(await other.recv())["status"] == 202  # the other socket goes on


async def test_auth_limits_and_validation(pipeline: Pipeline, uid: str) -> None:
    driver, other = f"a-{uid}", f"b-{uid}"
    token, other_token = pipeline.device_token(driver), pipeline.device_token(other)
    url = f"{pipeline.url}/v1/telemetry"
    async with httpx.AsyncClient(timeout=20) as c:
        r = await c.post(url, json={"pings": track(1)})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert (await c.post(url, json={"pings": track(1)}, headers=pipeline.headers("fsd_x.y"))).status_code == 401
        r = await c.post(url, json={"pings": [{**track(1)[0], "driver_id": other}]}, headers=pipeline.headers(token))
        assert r.status_code == 403 and driver in r.json()["detail"]
        r = await c.post(url, json={"pings": track(pipeline.settings.max_batch_pings + 1)},
                         headers=pipeline.headers(token))  # fmt: skip
        assert r.status_code == 413
        limit = pipeline.settings.max_batch_pings * 1024
        padded = b'{"pings": [' + b" " * limit + b"]}"
        r = await c.post(url, content=padded, headers=pipeline.headers(token))
        assert r.status_code == 413 and "larger than" in r.json()["detail"]

        async def chunks():  # no content-length: the limit holds while the body streams in
            yield b'{"pings": ['
            for _ in range(limit // 4096 + 1):
                yield b" " * 4096

        r = await c.post(url, content=chunks(), headers=pipeline.headers(token))
        assert r.status_code == 413 and "larger than" in r.json()["detail"]
        mixed = track(3)
        mixed[1]["lon"] = 500.0
        mixed[2]["ts"] = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
        r = await c.post(url, json={"pings": mixed}, headers=pipeline.headers(token))
        assert r.status_code == 422
        body = r.json()
        assert body["accepted"] == 1
        assert [(x["index"], x["reasons"][0]["field"]) for x in body["rejected"]] == [(1, "lon"), (2, "ts")]
        assert "future" in body["rejected"][1]["reasons"][0]["error"]
        assert (await c.post(url, content=b"{", headers=pipeline.headers(token))).status_code == 422

        # A driver reads only itself; dispatchers/admins read all.
        r = await c.get(f"{pipeline.url}/v1/drivers/{other}", headers=pipeline.headers(token))
        assert r.status_code == 403
        r = await c.get(
            f"{pipeline.url}/v1/drivers/nearby", params={"lat": 1, "lon": 1}, headers=pipeline.headers(token)
        )
        assert r.status_code == 403
        r = await c.post(f"{pipeline.url}/v1/zones", headers=pipeline.headers(token),
                         json={"name": "x", "circle": {"center": {"lat": 1, "lon": 1}, "radius_m": 5}})  # fmt: skip
        assert r.status_code == 403

        # Revocation: the device is locked out (token cache is 0 s in this pipeline).
        token_id = other_token.removeprefix("fsd_").split(".")[0]
        assert (
            await c.delete(f"{pipeline.url}/v1/devices/{token_id}", headers=pipeline.headers(pipeline.admin))
        ).status_code == 204
        r = await c.post(
            url, json={"pings": [{**track(1)[0], "driver_id": other}]}, headers=pipeline.headers(other_token)
        )
        assert r.status_code == 401


async def test_bad_zone_rejected_with_reason(pipeline: Pipeline) -> None:
    async with httpx.AsyncClient(timeout=20) as c:
        bowtie = [{"lat": 0, "lon": 0}, {"lat": 1, "lon": 1}, {"lat": 0, "lon": 1}, {"lat": 1, "lon": 0}]
        r = await c.post(f"{pipeline.url}/v1/zones", headers=pipeline.headers(pipeline.admin),
                         json={"name": "bowtie", "polygon": bowtie})  # fmt: skip
        assert r.status_code == 422 and "not valid" in r.text
        r = await c.post(f"{pipeline.url}/v1/zones", headers=pipeline.headers(pipeline.admin), json={"name": "none"})
        assert r.status_code == 422 and "exactly one of polygon or circle" in r.text


async def test_each_filter_drops_to_dead_letters(pipeline: Pipeline, stack: Settings, mongo, uid: str) -> None:  # type: ignore[no-untyped-def]
    driver = f"f-{uid}"
    token = pipeline.device_token(driver)
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    base = track(3, t0=t0)  # seq 0,1,2 accepted
    dup_seq = {**base[2], "lat": base[2]["lat"] + 1e-5}
    dup_ts = {**base[2], "seq": 3}
    older = {**track(1, seq0=4, t0=t0 - timedelta(seconds=30))[0]}
    blurry = {**track(1, seq0=5, t0=t0 + timedelta(seconds=10))[0], "accuracy_m": 900.0}
    jump = {**track(1, seq0=6, t0=t0 + timedelta(seconds=12))[0], "lat": 53.5}
    fine = track(1, seq0=7, t0=t0 + timedelta(seconds=14), lat0=base[2]["lat"] + 0.0001)[0]
    async with httpx.AsyncClient(timeout=20) as c, TopicTail(stack, "telemetry.dlq") as dlq:
        assert (await post(c, pipeline, token, base)).status_code == 202
        for p in (dup_seq, dup_ts, older, blurry, jump, fine):
            assert (await post(c, pipeline, token, [p])).status_code == 202
        dead = await dlq.collect(lambda v: isinstance(v, DeadLetter) and v.key == driver, count=5)
    assert sorted(orjson.loads(d.payload)["seq"] for d in dead) == [2, 3, 4, 5, 6]
    by_seq = {orjson.loads(d.payload)["seq"]: d.reason for d in dead}
    assert by_seq == {2: "duplicate", 3: "duplicate", 4: "out_of_order", 5: "low_accuracy", 6: "impossible_jump"}
    assert await eventually(lambda: _ge(lambda: _len(stored_seqs(mongo, driver)), 4))
    assert sorted(await stored_seqs(mongo, driver)) == [0, 1, 2, 7]
    # The worker counts every drop by reason.
    async with httpx.AsyncClient(timeout=5) as c:
        metrics = (await c.get(f"http://127.0.0.1:{pipeline.web_port}/metrics")).text
    assert 'fleetstream_pings_dropped_total{reason="impossible_jump"}' in metrics


async def test_replays_store_nothing_twice(pipeline: Pipeline, stack: Settings, producer, mongo, uid: str) -> None:  # type: ignore[no-untyped-def]
    """The same device batch twice (clean drops it) and the same *clean* record twice (sinks dedupe)."""
    driver = f"r-{uid}"
    token = pipeline.device_token(driver)
    pings = track(20)
    async with httpx.AsyncClient(timeout=20) as c:
        for _ in range(2):
            assert (await post(c, pipeline, token, pings)).status_code == 202
    assert await eventually(lambda: _ge(lambda: _len(stored_seqs(mongo, driver)), 20))
    again = TelemetryBatch(driver_id=driver, pings=[GpsPing(driver_id=driver, **p) for p in pings])
    for _ in range(2):  # bypasses the clean filter: only sink idempotency stands between this and duplicates
        await producer.send_and_wait(stack.topic("telemetry.clean"), encode(again), key=driver.encode())
    await asyncio.sleep(3)
    assert sorted(await stored_seqs(mongo, driver)) == list(range(20))  # each once
    assert (await mongo.drivers.find_one({"_id": driver}))["seq"] == 19


async def test_offline_timer_fires_and_leaves_geo_index(pipeline: Pipeline, stack: Settings, rds, uid: str) -> None:  # type: ignore[no-untyped-def]
    driver = f"o-{uid}"
    token = pipeline.device_token(driver)
    async with httpx.AsyncClient(timeout=20) as c, TopicTail(stack, "drivers.status") as status:
        assert (await post(c, pipeline, token, track(2, lat0=10.0, lon0=10.0))).status_code == 202
        events = await status.collect(lambda v: isinstance(v, DriverStatusEvent) and v.driver_id == driver, count=2)
    assert [e.status for e in events] == ["online", "offline"]
    assert await rds.hget(f"driver:{driver}", "status") == "offline"
    assert await rds.geopos("drivers:geo:available", driver) == [None]
    async with httpx.AsyncClient(timeout=20) as c:  # still on the dispatcher's map, shown offline
        fleet = await c.get(f"{pipeline.url}/v1/drivers", headers=pipeline.headers(pipeline.admin))
        assert {d["driver_id"]: d["status"] for d in fleet.json()}.get(driver) == "offline"
    async with httpx.AsyncClient(timeout=20) as c, TopicTail(stack, "drivers.status") as status:
        later = track(1, seq0=5, lat0=10.0, lon0=10.0, t0=datetime.now(UTC))
        assert (await post(c, pipeline, token, later)).status_code == 202
        back = await status.collect(lambda v: isinstance(v, DriverStatusEvent) and v.driver_id == driver)
    assert back[0].status == "online" and back[0].previous == "offline"


def test_kafka_unreachable_answers_503_never_202(stack: Settings, tmp_path, uid: str) -> None:  # type: ignore[no-untyped-def]
    p = Pipeline(stack, tmp_path, f"test-{uid}", FLEETSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    p.api = Proc(
        [sys.executable, "-m", "fleetstream.cli", "api", "--port", str(p.api_port)], p.env, tmp_path / "api.log"
    )
    try:
        assert wait_for(lambda: _status(f"{p.url}/healthz") == 200, 60), p.api.output()
        from api.security import admin_token

        p.admin = admin_token(stack)
        ready = httpx.get(f"{p.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["kafka"] is False
        token = p.device_token(f"k-{uid}")
        r = httpx.post(f"{p.url}/v1/telemetry", json={"pings": track(2)}, headers=p.headers(token), timeout=20)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        assert "Kafka" in r.json()["detail"]
    finally:
        p.stop()


@pytest.mark.timeout(600)
def test_sigkill_mid_stream_loses_no_ping(stack: Settings, tmp_path, uid: str) -> None:  # type: ignore[no-untyped-def]
    """Kill the worker with SIGKILL while pings flow; a restarted worker stores every accepted ping."""
    p = Pipeline(stack, tmp_path, f"test-kill-{uid}")
    p.start_worker()
    p.start_api()
    drivers = [f"k{i}-{uid}" for i in range(5)]
    tokens = {d: p.device_token(d) for d in drivers}
    accepted = {d: 0 for d in drivers}
    stop = threading.Event()

    def produce() -> None:
        t0 = datetime.now(UTC) - timedelta(minutes=40)  # 100 batches x 20 s stay in the past
        with httpx.Client(timeout=20) as c:
            for i in range(100):
                for d in drivers:
                    batch = track(10, seq0=i * 10, t0=t0 + timedelta(seconds=i * 20), lat0=52.5 + i * 0.002)
                    r = c.post(f"{p.url}/v1/telemetry", json={"pings": batch}, headers=p.headers(tokens[d]))
                    if r.status_code == 202:
                        accepted[d] += 10
                if stop.is_set():
                    break

    try:
        t = threading.Thread(target=produce)
        t.start()
        assert wait_for(lambda: sum(accepted.values()) >= 1500, 60, 0.01)
        assert p.worker is not None
        assert t.is_alive(), "the producer finished before the kill; the test proves nothing"
        p.worker.popen.send_signal(signal.SIGKILL)
        p.worker.popen.wait(10)
        t.join(120)
        p.start_worker()
        total = sum(accepted.values())
        assert total == 5000

        async def count() -> int:
            client: AsyncIOMotorClient = AsyncIOMotorClient(stack.mongo_dsn)
            try:
                db = client[stack.mongo_db]
                seqs = [await stored_seqs(db, d) for d in drivers]
                assert all(len(x) == len(set(x)) for x in seqs), "a ping was stored twice"
                return sum(len(x) for x in seqs)
            finally:
                client.close()

        assert wait_for(lambda: asyncio.run(count()) >= total, 120, 1.0), (asyncio.run(count()), total)
        assert asyncio.run(count()) == total
    finally:
        stop.set()
        p.stop()


async def test_tracker_apps_post_as_they_ship(pipeline: Pipeline, mongo, rds, uid: str) -> None:  # type: ignore[no-untyped-def]
    """The exact requests of Traccar Client, OsmAnd and GPSLogger, with the device token in the server URL."""
    from api.security import split_device_token

    driver = f"osm-{uid}"
    token = pipeline.device_token(driver)
    base = f"{pipeline.url}/v1/osmand/{token}"
    now = datetime.now(UTC).replace(microsecond=0)
    t = [now - timedelta(seconds=30 - 5 * i) for i in range(4)]
    async with httpx.AsyncClient(timeout=10) as c:
        # Traccar Client (Android/iOS): POST, fields in the query string, epoch seconds, speed in knots.
        query = f"id=123456&timestamp={int(t[0].timestamp())}&lat=52.5200&lon=13.4050"
        traccar = await c.post(f"{base}?{query}&speed=10.0&bearing=90.0&altitude=35.0&accuracy=5.0&batt=80.0")
        # OsmAnd's online tracking: GET, epoch milliseconds, hdop.
        osm = await c.get(f"{base}?id=123456&lat=52.5201&lon=13.4051&timestamp={int(t[1].timestamp() * 1000)}"
                          "&hdop=3&altitude=35&speed=0")  # fmt: skip
        # GPSLogger's custom URL, as a form body, ISO time.
        form = {"lat": "52.5202", "lon": "13.4052", "timestamp": t[2].isoformat(), "accuracy": "8", "bearing": "360"}
        gpslogger = await c.post(base, data=form)
        again = await c.post(base, data=form)  # a resend after a lost answer: accepted, then dropped as a duplicate
        no_fix = await c.get(f"{base}?id=1&timestamp={int(t[3].timestamp())}")
        garbage = await c.get(f"{base}?lat=52.5&lon=13.4&timestamp=yesterday")
        polar = await c.get(f"{base}?lat=95&lon=13.4")
        unknown = await c.get(f"{pipeline.url}/v1/osmand/fsd_nope.nope?lat=52.5&lon=13.4")
        assert [r.status_code for r in (traccar, osm, gpslogger, again)] == [200] * 4, traccar.text
        assert no_fix.status_code == 422 and "lat and lon" in no_fix.json()["detail"]
        assert garbage.status_code == 422 and "timestamp" in garbage.json()["detail"]
        assert polar.status_code == 422 and unknown.status_code == 401
        seqs = [int(x.timestamp() * 1000) for x in t[:3]]
        assert await eventually(lambda: _ge(lambda: _len(stored_seqs(mongo, driver)), 3))
        assert sorted(await stored_seqs(mongo, driver)) == seqs
        state = await rds.hgetall(f"driver:{driver}")
        assert int(state["seq"]) == seqs[2] and float(state["heading_deg"]) == 0.0
        # Revoked: the URL stops working (after the token cache, 0 s in these tests).
        parts = split_device_token(token)
        assert parts is not None
        gone = await c.delete(f"{pipeline.url}/v1/devices/{parts[0]}", headers=pipeline.headers(pipeline.admin))
        assert gone.status_code == 204
        after = await c.get(f"{base}?lat=52.5203&lon=13.4053")
        assert after.status_code == 401


def test_a_revoked_device_token_stops_working_on_every_replica_at_once(stack: Settings, tmp_path, uid: str) -> None:  # type: ignore[no-untyped-def]
    """Two API replicas with a 5-minute token cache: revoking on one ends the token on the other too.

    Token checks come from memory, then Redis (never MongoDB on the hot path); a revocation is
    pushed to every replica over Redis pub/sub instead of waiting out the cache.
    """
    a = Pipeline(stack, tmp_path / "a", f"test-{uid}", FLEETSTREAM_DEVICE_TOKEN_CACHE_S="300")
    b = Pipeline(stack, tmp_path / "b", f"test-{uid}", FLEETSTREAM_DEVICE_TOKEN_CACHE_S="300")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        a.start_api()
        b.start_api()
        token = a.device_token(f"rv-{uid}")
        body = {"pings": track(1)}
        assert httpx.post(f"{b.url}/v1/telemetry", json=body, headers=b.headers(token), timeout=20).status_code == 202
        from api.security import split_device_token

        parts = split_device_token(token)
        assert parts is not None
        assert asyncio.run(_hget(stack, f"devtoken:{parts[0]}", "driver_id")) == f"rv-{uid}"
        gone = httpx.delete(f"{a.url}/v1/devices/{parts[0]}", headers=a.headers(a.admin), timeout=20)
        assert gone.status_code == 204
        again = {"pings": track(1, seq0=5)}
        assert wait_for(lambda: httpx.post(f"{b.url}/v1/telemetry", json=again, headers=b.headers(token),
                                           timeout=20).status_code == 401, 3, 0.1)  # fmt: skip
    finally:
        a.stop()
        b.stop()


async def _hget(stack: Settings, key: str, field: str) -> str | None:
    r = aioredis.Redis.from_url(stack.redis_dsn, decode_responses=True)
    try:
        return await r.hget(key, field)
    finally:
        await r.aclose()


async def test_track_exports_stream_gpx_kml_and_csv_across_pages(pipeline: Pipeline, mongo, uid: str) -> None:  # type: ignore[no-untyped-def]
    """More than one reader page (5,000 pings) of 1 Hz history, exported whole in each format, in order."""
    import csv
    import io
    import xml.etree.ElementTree as ET

    driver, n = f"export-{uid}", 5200
    token = pipeline.device_token(driver)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=n + 60)
    pings = track(n, t0=t0, dlat=0.0001, dt=1.0)
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(0, n, 500):
            r = await post(client, pipeline, token, pings[i : i + 500])
            assert r.status_code == 202 and r.json()["accepted"] == len(pings[i : i + 500]), r.text
        assert await eventually(lambda: _ge(lambda: _count(mongo, driver), n), timeout=60), "history not stored"

        url = f"{pipeline.url}/v1/drivers/{driver}/track/export"
        since = {"from": (t0 - timedelta(seconds=1)).isoformat()}
        gpx = await client.get(url, params={**since, "format": "gpx"}, headers=pipeline.headers(token))
        assert gpx.status_code == 200, gpx.text
        assert gpx.headers["content-type"].startswith("application/gpx+xml")
        assert f'filename="{driver}-' in gpx.headers["content-disposition"]
        ns = {"g": "http://www.topografix.com/GPX/1/1", "x": "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"}
        points = ET.fromstring(gpx.content).findall(".//g:trkpt", ns)
        assert len(points) == n
        assert [float(p.get("lat") or 0) for p in points[:3]] == pytest.approx([pings[i]["lat"] for i in range(3)])
        times = [p.findtext("g:time", namespaces=ns) for p in points]
        assert times == sorted(times) and times[0] == t0.isoformat().replace("+00:00", "Z")
        assert points[0].findtext(".//x:speed", namespaces=ns) == "11.0"

        kml = await client.get(url, params={**since, "format": "kml"}, headers=pipeline.headers(token))
        assert kml.status_code == 200 and "kml" in kml.headers["content-type"]
        kns = {"k": "http://www.opengis.net/kml/2.2", "gx": "http://www.google.com/kml/ext/2.2"}
        tracks = ET.fromstring(kml.content).findall(".//gx:Track", kns)
        assert len(tracks) == 2  # one per reader page, each its times then its coordinates
        assert sum(len(t.findall("k:when", kns)) for t in tracks) == n
        assert sum(len(t.findall("gx:coord", kns)) for t in tracks) == n

        rows = await client.get(url, params={**since, "format": "csv"}, headers=pipeline.headers(pipeline.admin))
        assert rows.status_code == 200 and rows.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(rows.text)))
        assert [int(r["seq"]) for r in table] == list(range(n))
        assert float(table[-1]["lat"]) == pytest.approx(pings[-1]["lat"]) and table[0]["accuracy_m"] == "5.0"

        # A window: only its pings; and the rules of track reads.
        window = {"from": (t0 + timedelta(seconds=100)).isoformat(), "to": (t0 + timedelta(seconds=110)).isoformat()}
        part = await client.get(url, params={**window, "format": "csv"}, headers=pipeline.headers(token))
        assert [int(r["seq"]) for r in csv.DictReader(io.StringIO(part.text))] == list(range(100, 110))
        other = pipeline.device_token(f"other-{uid}")
        assert (await client.get(url, headers=pipeline.headers(other))).status_code == 403
        backwards = {"from": window["to"], "to": window["from"]}
        assert (await client.get(url, params=backwards, headers=pipeline.headers(token))).status_code == 422
        too_long = {"from": (t0 - timedelta(days=8)).isoformat(), "to": t0.isoformat()}
        assert (await client.get(url, params=too_long, headers=pipeline.headers(token))).status_code == 422
        assert (await client.get(url, params={"format": "shp"}, headers=pipeline.headers(token))).status_code == 422
        naive = await client.get(url, params={"from": "2026-01-01T00:00:00"}, headers=pipeline.headers(token))
        assert naive.status_code == 422


async def _count(db, driver: str) -> int:  # type: ignore[no-untyped-def]
    return len(await stored_seqs(db, driver))


async def test_trips_stops_and_summary_from_the_trips_agent(pipeline: Pipeline, uid: str) -> None:
    """A drive, a 400 s stop and a drive (at 1 Hz, an hour ago) through the worker's trips agent and the store."""
    driver = f"trips-{uid}"
    token = pipeline.device_token(driver)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    north = track(61, t0=t0, dlat=0.0001, dt=1.0)  # ~11 m/s for 60 s: ~667 m
    parked = [{**north[-1], "seq": 61 + i, "ts": (t0 + timedelta(seconds=61 + i)).isoformat(),
               "lat": north[-1]["lat"] + (i % 3) * 0.00005, "speed_mps": 0.0} for i in range(400)]  # fmt: skip
    on = track(60, seq0=461, t0=t0 + timedelta(seconds=461), lat0=north[-1]["lat"] + 0.0001, dlat=0.0001, dt=1.0)
    pings = north + parked + on
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(0, len(pings), 100):
            r = await post(client, pipeline, token, pings[i : i + 100])
            assert r.status_code == 202 and r.json()["accepted"] == len(pings[i : i + 100]), r.text
        base = f"{pipeline.url}/v1/drivers/{driver}"
        window = {"from": (t0 - timedelta(minutes=1)).isoformat()}

        async def closed_trip() -> list[dict[str, Any]] | None:
            r = await client.get(f"{base}/trips", params=window, headers=pipeline.headers(token))
            assert r.status_code == 200, r.text
            trips = r.json()
            return trips if len(trips) == 2 and trips[0]["end"] is not None else None

        trips = await eventually(closed_trip, timeout=60)
        assert trips, "the trips agent's trips never reached the API"
        first, second = trips
        assert first["trip_id"] == f"{driver}:0" and first["distance_m"] == pytest.approx(667, rel=0.05)
        assert first["max_speed_mps"] == 11.0 and 55 <= first["driving_s"] <= 61
        assert second["end"] is None  # under way: the last fix inside the stop's radius is where it starts
        assert abs(second["start_lat"] - parked[-1]["lat"]) < 0.0006

        stops = (await client.get(f"{base}/stops", params=window, headers=pipeline.headers(token))).json()
        assert len(stops) == 1 and stops[0]["duration_s"] == pytest.approx(400, abs=5)
        assert stops[0]["start"] == first["end"] and stops[0]["end"] == second["start"]

        admin = pipeline.headers(pipeline.admin)
        s = (await client.get(f"{base}/summary", params=window, headers=admin)).json()
        assert s["trips"] == 2 and s["stops"] == 1 and s["idle_s"] == pytest.approx(400, abs=5)
        assert s["distance_m"] >= first["distance_m"] and s["max_speed_mps"] == 11.0
        before = {"from": (t0 - timedelta(hours=3)).isoformat(), "to": (t0 - timedelta(hours=2)).isoformat()}
        empty = (await client.get(f"{base}/summary", params=before, headers=admin)).json()
        assert (empty["trips"], empty["stops"], empty["distance_m"]) == (0, 0, 0.0)

        other = pipeline.headers(pipeline.device_token(f"other-{uid}"))
        for path in ("trips", "stops", "summary"):
            assert (await client.get(f"{base}/{path}", headers=other)).status_code == 403
        too_long = {"from": (t0 - timedelta(days=40)).isoformat(), "to": t0.isoformat()}
        assert (await client.get(f"{base}/summary", params=too_long, headers=admin)).status_code == 422


async def test_cross_for_sparse_fixes_and_who_is_inside_a_zone(pipeline: Pipeline, uid: str) -> None:
    """A yard (enter/exit) and a 30 m kiosk that detects cross, passed between two fixes 110 m apart."""
    driver = f"cross-{uid}"
    token = pipeline.device_token(driver)
    admin = pipeline.headers(pipeline.admin)
    lat0 = 48.10 + (int(uid[:4], 16) % 500) * 0.001  # a place of this test run's own
    async with httpx.AsyncClient(timeout=20) as client:
        zones = f"{pipeline.url}/v1/zones"
        yard_in = {"name": f"yard {uid}", "circle": {"center": {"lat": lat0, "lon": 11.5}, "radius_m": 200}}
        yard = (await client.post(zones, headers=admin, json=yard_in)).json()
        kiosk = await client.post(zones, headers=admin, json={
            "name": f"kiosk {uid}", "detect": ["enter", "exit", "cross"],
            "circle": {"center": {"lat": lat0 + 0.01, "lon": 11.5}, "radius_m": 30}})  # fmt: skip
        assert kiosk.status_code == 201 and kiosk.json()["detect"] == ["enter", "exit", "cross"], kiosk.text
        kiosk_id, yard_id = kiosk.json()["zone_id"], yard["zone_id"]
        assert yard["detect"] == ["enter", "exit", "dwell"]
        bogus = {"name": "x", "detect": ["teleport"], "circle": {"center": {"lat": 1, "lon": 1}, "radius_m": 5}}
        assert (await client.post(zones, headers=admin, json=bogus)).status_code == 422
        await asyncio.sleep(1.5)  # workers read zones:changes every second

        t0 = datetime.now(UTC) - timedelta(seconds=60)
        fix = [(lat0, 0), (lat0 + 0.005, 10), (lat0 + 0.0095, 20), (lat0 + 0.0105, 30)]
        pings = [{"seq": i, "ts": (t0 + timedelta(seconds=dt)).isoformat(), "lat": lat, "lon": 11.5,
                  "accuracy_m": 5.0} for i, (lat, dt) in enumerate(fix)]  # fmt: skip
        assert (await post(client, pipeline, token, pings[:1])).status_code == 202

        async def members(zone: str, where: str = "inside") -> list[str]:
            r = await client.get(f"{zones}/{zone}/drivers", params={"where": where}, headers=admin)
            assert r.status_code == 200, r.text
            return r.json()["drivers"]

        async def in_yard() -> bool:
            return driver in await members(yard_id)

        assert await eventually(in_yard), "the yard never had the driver inside"
        assert driver in await members(kiosk_id, "outside") and driver not in await members(kiosk_id)
        assert (await post(client, pipeline, token, pings[1:])).status_code == 202

        async def crossed() -> list[dict[str, Any]]:
            r = await client.get(f"{zones}/{kiosk_id}/events", headers=admin)
            return [e for e in r.json() if e["driver_id"] == driver]

        events = await eventually(crossed)
        assert [(e["type"], e["at"][:19]) for e in events] == [("geofence.cross", pings[3]["ts"][:19])]

        async def left_yard() -> bool:
            return driver not in await members(yard_id)

        assert await eventually(left_yard)
        yard_events = (await client.get(f"{zones}/{yard_id}/events", headers=admin)).json()
        assert [e["type"] for e in yard_events] == ["geofence.exit", "geofence.enter"]
        assert (await client.get(f"{zones}/nope/drivers", headers=admin)).status_code == 404
        assert (await client.get(f"{zones}/{yard_id}/drivers", headers=pipeline.headers(token))).status_code == 403
        for z in (yard_id, kiosk_id):
            assert (await client.delete(f"{zones}/{z}", headers=admin)).status_code == 204


async def test_zone_changes_reach_an_index_one_zone_at_a_time(pipeline: Pipeline, stack: Settings, mongo, rds,
                                                              uid: str) -> None:  # fmt: skip
    """A worker's index follows create, replace and delete through zones:changes, without loading all again."""
    from streams.geofence import Zones

    zones = Zones(redis=rds, db=mongo)
    await zones.refresh()
    assert zones.loaded
    loads = []
    original = zones.load_all

    async def counted() -> None:
        loads.append(1)
        await original()

    zones.load_all = counted  # type: ignore[method-assign]
    admin = pipeline.headers(pipeline.admin)
    url = f"{pipeline.url}/v1/zones"
    here = {"name": f"z {uid}", "circle": {"center": {"lat": -40.0, "lon": -70.0}, "radius_m": 100}}
    async with httpx.AsyncClient(timeout=20) as client:
        zid = (await client.post(url, json=here, headers=admin)).json()["zone_id"]
        await zones.refresh()
        assert [z.zone_id for z in zones.index.containing(-40.0, -70.0)] == [zid]
        moved = {**here, "circle": {"center": {"lat": -41.0, "lon": -70.0}, "radius_m": 100}}
        assert (await client.put(f"{url}/{zid}", json=moved, headers=admin)).status_code == 200
        await zones.refresh()
        assert zones.index.containing(-40.0, -70.0) == []
        assert [z.zone_id for z in zones.index.containing(-41.0, -70.0)] == [zid]
        assert (await client.delete(f"{url}/{zid}", headers=admin)).status_code == 204
        await zones.refresh()
    assert zones.index.containing(-41.0, -70.0) == [] and zid not in zones.index.zones
    assert loads == []  # each change was applied alone
