"""A real Faust worker (``fleetstream worker`` subprocess) on the local Kafka: table, output, dead letters."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import DEVNULL
from typing import Any

import pytest
from redis.asyncio import Redis

from core.config import Settings
from schemas import DeadLetter, GpsPing, TelemetryBatch, encode
from schemas.contracts import driver_key
from tests.conftest import Pipeline, TopicTail, free_port, wait_for

pytestmark = pytest.mark.usefixtures("stack")


def batch(driver: str, seq0: int, ts: datetime, n: int = 3) -> TelemetryBatch:
    return TelemetryBatch(
        driver_id=driver,
        pings=[
            GpsPing(driver_id=driver, seq=seq0 + i, ts=ts + timedelta(seconds=i), lat=52.5 + i * 1e-4, lon=13.4)
            for i in range(n)
        ],
    )


async def test_worker_consumes_updates_table_and_produces(stack: Settings, tmp_path, producer, uid: str) -> None:  # type: ignore[no-untyped-def]
    driver = f"w-{uid}"
    p = Pipeline(stack, tmp_path, f"test-{uuid.uuid4().hex[:8]}")
    p.env["FLEETSTREAM_AGENTS"] = "clean"
    try:
        p.start_worker()
        t0 = datetime.now(UTC) - timedelta(minutes=10)
        first = batch(driver, 0, t0)
        async with TopicTail(stack, "telemetry.clean") as out, TopicTail(stack, "telemetry.dlq") as dlq:
            key, raw = driver.encode(), stack.topic("telemetry.raw")
            await producer.send_and_wait(raw, b'{"type": "telemetry.batch", "driver_id": 42', key=key)
            await producer.send_and_wait(raw, encode(first), key=key)
            # The same pings again: only the table (last accepted seq per driver) can tell they are duplicates.
            await producer.send_and_wait(raw, encode(batch(driver, 0, t0)), key=key)
            await producer.send_and_wait(raw, encode(batch(driver, 3, t0 + timedelta(seconds=5))), key=key)

            def mine(v: object) -> bool:
                return isinstance(v, TelemetryBatch) and v.driver_id == driver

            cleaned = await out.collect(mine, count=2, timeout=60)
            cleaned += await out.collect(mine, count=1, timeout=3)  # nothing else may follow
            dead = await dlq.collect(lambda v: isinstance(v, DeadLetter) and v.key == driver, count=4, timeout=30)
    finally:
        p.stop()
    assert [[q.seq for q in b.pings] for b in cleaned] == [[0, 1, 2], [3, 4, 5]], p.worker.output()[-3000:]
    assert cleaned[0].pings == first.pings
    reasons = sorted(d.reason for d in dead)
    assert reasons == ["duplicate", "out_of_order", "out_of_order", "undecodable"]  # seq 2, then 0 and 1
    undecodable = next(d for d in dead if d.reason == "undecodable")
    assert undecodable.source_topic == stack.topic("telemetry.raw") and '"driver_id": 42' in undecodable.payload


async def test_store_reads_fast_or_through_the_schema(stack: Settings, tmp_path, producer, uid: str) -> None:  # type: ignore[no-untyped-def]
    """The history sink takes our encoder's records by its fast reader, anything else through the schema.

    An undecodable record is dead-lettered; a valid batch out of seq order (clean forwards a
    fully accepted device batch as sent) is stored in seq order all the same.
    """
    from motor.motor_asyncio import AsyncIOMotorClient

    from tests.test_telemetry import stored_seqs

    driver = f"st-{uid}"
    p = Pipeline(stack, tmp_path, f"test-{uuid.uuid4().hex[:8]}")
    p.env["FLEETSTREAM_AGENTS"] = "store"
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    backwards = batch(driver, 3, t0 + timedelta(seconds=5))
    backwards = backwards.model_copy(update={"pings": backwards.pings[::-1]})
    mongo = AsyncIOMotorClient(stack.mongo_dsn, tz_aware=True)
    try:
        p.start_worker()
        async with TopicTail(stack, "telemetry.dlq") as dlq:
            key, clean = driver.encode(), stack.topic("telemetry.clean")
            await producer.send_and_wait(clean, b'{"type": "telemetry.batch", "driver_id": 42', key=key)
            await producer.send_and_wait(clean, encode(batch(driver, 0, t0)), key=key)
            await producer.send_and_wait(clean, encode(backwards), key=key)
            dead = await dlq.collect(lambda v: isinstance(v, DeadLetter) and v.key == driver, count=1, timeout=30)
            db = mongo[stack.mongo_db]
            ok = await wait_async(lambda: stored_seqs(db, driver), lambda seqs: len(seqs) >= 6, 30)
            stored = await stored_seqs(db, driver)
    finally:
        p.stop()
        mongo.close()
    assert ok, p.worker.output()[-3000:]
    assert stored == [0, 1, 2, 3, 4, 5]
    assert [(d.reason, d.source_topic) for d in dead] == [("undecodable", stack.topic("telemetry.clean"))]


async def test_one_ping_records_are_stored_in_few_buckets_once_across_a_restart(  # type: ignore[no-untyped-def]
    stack: Settings, tmp_path, producer, uid: str
) -> None:
    """Phones post one ping per request: history gathers them per driver into one document.

    Every record sent twice (a replay of clean's output), and the worker restarted between
    the two halves: each ping is stored exactly once, in a handful of documents.
    """
    from motor.motor_asyncio import AsyncIOMotorClient

    driver = f"hb-{uid}"
    p = Pipeline(stack, tmp_path, f"test-{uuid.uuid4().hex[:8]}", FLEETSTREAM_AGENTS="store",
                 FLEETSTREAM_HISTORY_FLUSH_S="3", FLEETSTREAM_HISTORY_BUCKET_PINGS="1000")  # fmt: skip
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    key, clean = driver.encode(), stack.topic("telemetry.clean")
    mongo = AsyncIOMotorClient(stack.mongo_dsn, tz_aware=True)
    db = mongo[stack.mongo_db]

    async def docs() -> list[dict[str, Any]]:
        return [d async for d in db.tracks.find({"driver_id": driver}, {"pings": 1, "fmt": 1, "n": 1})]

    async def send(seqs: range) -> None:
        for seq in seqs:
            record = encode(batch(driver, seq, t0 + timedelta(seconds=seq), n=1))
            await producer.send_and_wait(clean, record, key=key)
            await producer.send_and_wait(clean, record, key=key)

    try:
        p.start_worker()
        await send(range(0, 40))
        ok = await wait_async(docs, lambda ds: sum(d["n"] for d in ds) >= 40, 30)
        assert ok, p.worker.output()[-3000:]
        p.stop()
        p.start_worker()
        await send(range(30, 80))  # 30-39 again after the restart: stored already
        ok = await wait_async(docs, lambda ds: sum(d["n"] for d in ds) >= 80, 30)
        await asyncio.sleep(4)  # one more flush interval: nothing else arrives
        stored = await docs()
    finally:
        p.stop()
        mongo.close()
    assert ok, p.worker.output()[-3000:]
    from schemas.track import bucket_pings

    assert sorted(q["seq"] for d in stored for q in bucket_pings(d)) == list(range(80))
    assert len(stored) <= 6, [d["n"] for d in stored]  # 160 records, not 80 documents


async def wait_async(get, done, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if done(await get()):
            return True
        await asyncio.sleep(0.3)
    return False


async def test_an_agent_error_stops_the_worker_and_its_restart_processes_the_batch(  # type: ignore[no-untyped-def]
    stack: Settings, tmp_path, producer, uid: str
) -> None:
    """A Redis of its own, killed under the worker: the driver-state step raises.

    The worker must exit (Faust alone would restart the agent past the failed batch and
    run on, its committed offset stuck behind it); restarted with Redis back, it reads
    the same batch again and the driver's state appears.
    """
    port = free_port()
    redis_cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    server = await asyncio.create_subprocess_exec(*redis_cmd, stdout=DEVNULL, stderr=DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    driver = f"crash-{uid}"
    env = {"FLEETSTREAM_REDIS_URL": url, "FLEETSTREAM_AGENTS": "clean,driver_state"}
    # Without Redis the offline timer would crash the worker as well; this test is about the agent.
    p = Pipeline(stack, tmp_path, f"test-crash-{uid}", FLEETSTREAM_OFFLINE_CHECK_S="3600", **env)
    try:
        p.start_worker()
        server.kill()
        await server.wait()
        await producer.send_and_wait(
            stack.topic("telemetry.raw"), encode(batch(driver, 0, datetime.now(UTC) - timedelta(seconds=5))),
            key=driver.encode(),
        )  # fmt: skip
        assert p.worker is not None
        exited = wait_for(lambda: p.worker.popen.poll() is not None, 90, 0.5)
        assert exited, p.worker.output()[-4000:]
        assert p.worker.popen.returncode != 0
        assert "agent streams.pipeline.telemetry crashed" in p.worker.output()
        server = await asyncio.create_subprocess_exec(*redis_cmd, stdout=DEVNULL, stderr=DEVNULL)
        p.start_worker()
        r = Redis.from_url(url)
        try:
            state = None
            for _ in range(120):
                state = await r.hgetall(driver_key(driver))
                if state:
                    break
                await asyncio.sleep(0.5)
        finally:
            await r.aclose()
        assert state and int(state[b"seq"]) == 2, p.worker.output()[-4000:]
    finally:
        p.stop()
        if server.returncode is None:
            server.kill()
            await server.wait()


POISON_STEPS = ("clean", "driver_state", "geofence", "publish", "eta", "store_pings")


async def test_a_poison_record_in_any_step_is_dead_lettered_and_stops_nothing(  # type: ignore[no-untyped-def]
    stack: Settings, tmp_path, producer, uid: str
) -> None:
    """Each step fails on one driver's records (fault injection); a fix at latitude 86 is real data.

    The records go in together, so they share batches with good drivers' records. Every
    poison record is dead-lettered naming its step, every other driver's pings are
    processed (in the same batch), and the worker stays up.
    """
    import json

    from motor.motor_asyncio import AsyncIOMotorClient

    from schemas.base import GEO_MAX_LAT
    from schemas.contracts import GEO_KEY
    from tests.test_telemetry import stored_seqs

    poison = {step: f"poison-{step.replace('_', '-')}-{uid}" for step in POISON_STEPS}
    good = [f"good-{i}-{uid}" for i in range(6)]
    polar = f"polar-{uid}"
    p = Pipeline(stack, tmp_path, f"test-{uuid.uuid4().hex[:8]}", FLEETSTREAM_FAULT_POISON=json.dumps(poison))
    p.env["FLEETSTREAM_AGENTS"] = "clean,driver_state,geofence,publish,eta,store"
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    r = Redis.from_url(stack.redis_dsn)
    mongo = AsyncIOMotorClient(stack.mongo_dsn, tz_aware=True)
    try:
        p.start_worker()
        async with TopicTail(stack, "telemetry.dlq") as dlq:
            raw = stack.topic("telemetry.raw")
            drivers = [*good[:3], *poison.values(), *good[3:]]
            sends = [producer.send(raw, encode(batch(d, 0, t0)), key=d.encode()) for d in drivers]
            polar_batch = batch(polar, 0, t0)
            polar_batch = polar_batch.model_copy(
                update={"pings": [q.model_copy(update={"lat": 86.0 + q.seq * 1e-5}) for q in polar_batch.pings]}
            )
            sends.append(producer.send(raw, encode(polar_batch), key=polar.encode()))
            for fut in await asyncio.gather(*sends):
                await fut
            dead = await dlq.collect(
                lambda v: isinstance(v, DeadLetter) and v.reason == "step_failed" and v.key in poison.values(),
                count=len(poison), timeout=60,
            )  # fmt: skip

            async def state(d: str) -> dict[bytes, bytes]:
                return await r.hgetall(driver_key(d))

            for d in [*good, polar, poison["geofence"], poison["publish"], poison["eta"]]:
                assert await wait_async(lambda d=d: state(d), lambda h: h and int(h[b"seq"]) == 2, 30), d
            db = mongo[stack.mongo_db]
            for d in [*good, poison["driver_state"]]:
                assert await wait_async(lambda d=d: stored_seqs(db, d), lambda s: s == [0, 1, 2], 30), d
            assert not await state(poison["clean"]) and not await state(poison["driver_state"])
            assert p.worker is not None and p.worker.popen.poll() is None, p.worker.output()[-3000:]
    finally:
        p.stop()
        mongo.close()
    assert sorted((d.step, d.key) for d in dead) == sorted(poison.items()), [(d.step, d.key) for d in dead]
    polar_state = await r.hgetall(driver_key(polar))
    assert float(polar_state[b"lat"]) > GEO_MAX_LAT  # kept in its state, out of the geo index
    assert await r.geopos(GEO_KEY, polar) == [None]
    await r.aclose()


async def committed_lag(stack: Settings, group: str, topic: str, detail: bool = False) -> Any:
    """Records of ``topic`` past the group's committed offsets, over all partitions."""
    from aiokafka import TopicPartition

    from core.kafka import make_consumer
    from streams.topics import TOPICS, partitions_for

    spec = next(t for t in TOPICS if t.name == topic)
    tps = [TopicPartition(stack.topic(topic), p) for p in range(partitions_for(spec, stack))]
    consumer = make_consumer(stack, group_id=group)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        behind = {tp.partition: (ends[tp], (await consumer.committed(tp)) or 0) for tp in tps}
        return behind if detail else sum(end - done for end, done in behind.values())
    finally:
        await consumer.stop()


async def whereabouts(stack: Settings, missing: dict[str, list[int]]) -> dict[str, list[tuple[str, int, int]]]:
    """For a failure message: the records of raw, clean and dead-letter topics that hold each missing ping."""
    import orjson
    from aiokafka import TopicPartition

    from core.kafka import make_consumer
    from streams.topics import TOPICS, partitions_for

    out: dict[str, list[tuple[str, int, int]]] = {}
    for name in ("telemetry.raw", "telemetry.clean", "telemetry.dlq"):
        spec = next(t for t in TOPICS if t.name == name)
        tps = [TopicPartition(stack.topic(name), p) for p in range(partitions_for(spec, stack))]
        consumer = make_consumer(stack)
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            left = {tp for tp in tps if ends[tp] > 0}
            while left:
                got = await consumer.getmany(timeout_ms=2000, max_records=10_000)
                if not got:
                    break
                for tp, msgs in got.items():
                    for m in msgs:
                        driver = m.key.decode() if m.key else ""
                        if missing.get(driver):
                            try:
                                v = orjson.loads(m.value)
                                inner = orjson.loads(v["payload"]) if "payload" in v else {}  # a dead letter
                                held = v.get("pings") or inner.get("pings") or [inner]
                                seqs = {q["seq"] for q in held if "seq" in q}
                            except Exception:
                                continue
                            for seq in seqs & set(missing[driver]):
                                out.setdefault(f"{driver}/{seq}", []).append((name, tp.partition, m.offset))
                        if m.offset >= ends[tp] - 1:
                            left.discard(tp)
        finally:
            await consumer.stop()
    return out


@pytest.mark.timeout(600)
async def test_agents_crashed_mid_batch_again_and_again_lose_no_acknowledged_ping(  # type: ignore[no-untyped-def]
    stack: Settings, tmp_path, producer, uid: str
) -> None:
    """A server that stays down (the agent crashes) and kill -9, in turns, while pings flow.

    Each crashed worker exits within seconds; after the last restart every ping Kafka
    acknowledged is in MongoDB exactly once, and the committed offsets reach the end.
    """
    from motor.motor_asyncio import AsyncIOMotorClient

    from schemas.track import bucket_pings

    port = free_port()
    redis_cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    server = await asyncio.create_subprocess_exec(*redis_cmd, stdout=DEVNULL, stderr=DEVNULL)
    group = f"test-crashes-{uid}"
    env = {"FLEETSTREAM_REDIS_URL": f"redis://127.0.0.1:{port}/0", "FLEETSTREAM_AGENTS": "clean,driver_state,store",
           "FLEETSTREAM_SERVER_RETRY_S": "1", "FLEETSTREAM_CRASH_EXIT_S": "3"}  # fmt: skip
    p = Pipeline(stack, tmp_path, group, FLEETSTREAM_OFFLINE_CHECK_S="3600", **env)
    drivers = [f"cr{i}-{uid}" for i in range(8)]
    sent: dict[str, int] = dict.fromkeys(drivers, 0)
    stop = asyncio.Event()
    t0 = datetime.now(UTC) - timedelta(hours=2)

    async def produce() -> None:
        raw, i = stack.topic("telemetry.raw"), 0
        while not stop.is_set():
            futs = [await producer.send(raw, encode(batch(d, i * 5, t0 + timedelta(seconds=i * 6), n=5)),
                                        key=d.encode()) for d in drivers]  # fmt: skip
            for d, fut in zip(drivers, futs, strict=True):
                await fut  # acknowledged by Kafka: must be stored
                sent[d] += 5
            i += 1
            await asyncio.sleep(0.25)

    mongo = AsyncIOMotorClient(stack.mongo_dsn, tz_aware=True)
    load = None
    try:
        p.start_worker()
        load = asyncio.create_task(produce())
        for round_ in range(3):  # a server that stays down, kill -9, and the server again
            await asyncio.sleep(3)
            assert p.worker is not None
            if round_ % 2 == 0:  # Redis gone for longer than the retry budget: the agent crashes
                server.kill()
                await server.wait()
                t_kill = asyncio.get_running_loop().time()
                exited = await asyncio.to_thread(wait_for, lambda: p.worker.popen.poll() is not None, 30, 0.2)
                assert exited, p.worker.output()[-4000:]
                assert asyncio.get_running_loop().time() - t_kill < 15, "a crashed worker took too long to exit"
                server = await asyncio.create_subprocess_exec(*redis_cmd, stdout=DEVNULL, stderr=DEVNULL)
            else:
                p.worker.popen.kill()
                p.worker.popen.wait(10)
            await asyncio.to_thread(p.start_worker)
        stop.set()
        await load
        db = mongo[stack.mongo_db]
        want = {d: list(range(n)) for d, n in sent.items()}

        async def stored() -> dict[str, list[int]]:
            # From MongoDB itself: the bucket directory lived in the Redis this test restarted empty.
            out: dict[str, list[int]] = {d: [] for d in drivers}
            async for doc in db.tracks.find({"driver_id": {"$in": drivers}}, {"pings": 1, "fmt": 1, "driver_id": 1}):
                out[doc["driver_id"]] += [q["seq"] for q in bucket_pings(doc)]
            return out

        ok = await wait_async(stored, lambda got: all(sorted(got[d]) == want[d] for d in drivers), 240)
        got = await stored()
        missing = {d: sorted(set(want[d]) - set(got[d])) for d in drivers if sorted(got[d]) != want[d]}
        if not ok:
            where = await whereabouts(stack, {d: m[:20] for d, m in missing.items()})
            raise AssertionError(({d: (len(got[d]), len(want[d])) for d in drivers}, where, p.worker.output()[-3000:]))
        assert all(len(got[d]) == len(set(got[d])) for d in drivers), "a ping was stored twice"
        lag_ok = await wait_async(lambda: committed_lag(stack, group, "telemetry.raw"), lambda lag: lag == 0, 60)
        assert lag_ok, (await committed_lag(stack, group, "telemetry.raw", detail=True), p.worker.output()[-3000:])
        assert await wait_async(lambda: committed_lag(stack, group, "telemetry.clean"), lambda lag: lag == 0, 60)
    finally:
        stop.set()
        if load is not None and not load.done():
            load.cancel()
        p.stop()
        mongo.close()
        if server.returncode is None:
            server.kill()
            await server.wait()


@pytest.mark.timeout(300)
async def test_a_worker_killed_hands_its_partitions_to_the_other_within_seconds(  # type: ignore[no-untyped-def]
    stack: Settings, tmp_path, producer, uid: str
) -> None:
    """Two live workers in one group; one is killed with -9: the other serves all drivers again soon.

    Kafka notices the dead member after ``consumer_session_timeout_s`` (6 s; 60 s before, when
    a dead worker's drivers went unprocessed for a minute) and the survivor takes its partitions.
    """
    group = f"test-failover-{uid}"
    env = {"FLEETSTREAM_AGENTS": "clean,driver_state", "FLEETSTREAM_OFFLINE_CHECK_S": "3600"}
    # One directory: the second worker sees the first's log and joins its group as it is
    # (committing the group's start offsets again, with a member in it, would fail).
    a = Pipeline(stack, tmp_path, group, **env)
    b = Pipeline(stack, tmp_path, group, **env)
    drivers = [f"fo{i}-{uid}" for i in range(24)]  # over all 8 partitions
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    r = Redis.from_url(stack.redis_dsn)

    async def send(round_: int) -> None:
        at = t0 + timedelta(seconds=round_ * 5)
        for d in drivers:
            await producer.send(stack.topic("telemetry.raw"), encode(batch(d, round_ * 3, at)), key=d.encode())
        await producer.flush()

    async def seqs() -> list[int]:
        pipe = r.pipeline(transaction=False)
        for d in drivers:
            pipe.hget(driver_key(d), "seq")
        return [int(v) if v is not None else -1 for v in await pipe.execute()]

    try:
        a.start_worker()
        b.start_worker()
        await send(0)
        assert await wait_async(seqs, lambda got: all(s == 2 for s in got), 90), "both workers never served"
        assert a.worker is not None
        a.worker.popen.kill()  # no goodbye: the group learns of it only by the missing heartbeats
        killed = asyncio.get_running_loop().time()
        round_ = 0
        while asyncio.get_running_loop().time() - killed < 60:  # a round a second, as phones keep posting
            round_ += 1
            await send(round_)
            if min(await seqs()) >= 5:  # round 1, sent just after the kill, processed for every driver
                break
            await asyncio.sleep(1.0)
        took = asyncio.get_running_loop().time() - killed
        got = await seqs()
        assert min(got) >= 5, (took, got, b.worker.output()[-3000:] if b.worker else "")
        print(f"every driver served again {took:.1f} s after the kill")
        assert took < 25, took  # the 6 s session, the rebalance, the backlog of the rounds since
    finally:
        await r.aclose()
        a.stop()
        b.stop()


@pytest.mark.timeout(420)
async def test_rebalances_under_load_keep_every_driver_in_order_and_lose_nothing(  # type: ignore[no-untyped-def]
    stack: Settings, tmp_path, producer, uid: str
) -> None:
    """A second worker joins, leaves, joins and is killed, again and again, while pings flow.

    Each change is a rebalance. A record that one worker read past (or re-read after later
    ones) reaches the clean step out of order: its pings are taken for stale and dead-lettered
    as ``out_of_order``, though Kafka acknowledged them. So: no ping of these drivers is
    dead-lettered, every one is stored exactly once, and the committed offsets reach the end.
    """
    import orjson
    from motor.motor_asyncio import AsyncIOMotorClient

    from schemas.track import bucket_pings

    group = f"test-rebalance-{uid}"
    env = {"FLEETSTREAM_AGENTS": "clean,driver_state,store", "FLEETSTREAM_OFFLINE_CHECK_S": "3600"}
    a = Pipeline(stack, tmp_path, group, **env)
    b = Pipeline(stack, tmp_path, group, **env)
    drivers = [f"rb{i}-{uid}" for i in range(24)]  # over all 8 partitions
    sent: dict[str, int] = dict.fromkeys(drivers, 0)
    stop = asyncio.Event()
    t0 = datetime.now(UTC) - timedelta(hours=2)

    async def produce() -> None:
        raw, i = stack.topic("telemetry.raw"), 0
        while not stop.is_set():
            futs = [await producer.send(raw, encode(batch(d, i * 4, t0 + timedelta(seconds=i * 5), n=4)),
                                        key=d.encode()) for d in drivers]  # fmt: skip
            for d, fut in zip(drivers, futs, strict=True):
                await fut
                sent[d] += 4
            i += 1
            await asyncio.sleep(0.05)

    mongo = AsyncIOMotorClient(stack.mongo_dsn, tz_aware=True)
    load = None
    async with TopicTail(stack, "telemetry.dlq") as dlq:
        try:
            a.start_worker()
            load = asyncio.create_task(produce())
            for round_ in range(4):  # join, leave gracefully, join, die
                await asyncio.sleep(2)
                await asyncio.to_thread(b.start_worker)
                await asyncio.sleep(3)
                assert b.worker is not None
                if round_ % 2 == 0:
                    await asyncio.to_thread(b.worker.stop)
                else:
                    b.worker.popen.kill()
                    b.worker.popen.wait(10)
                    await asyncio.sleep(11)  # the session timeout: the group then rebalances
            stop.set()
            await load
            db = mongo[stack.mongo_db]
            want = {d: list(range(n)) for d, n in sent.items()}

            async def stored() -> dict[str, list[int]]:
                out: dict[str, list[int]] = {d: [] for d in drivers}
                fields = {"pings": 1, "fmt": 1, "driver_id": 1}
                async for doc in db.tracks.find({"driver_id": {"$in": drivers}}, fields):
                    out[doc["driver_id"]] += [q["seq"] for q in bucket_pings(doc)]
                return out

            ok = await wait_async(stored, lambda got: all(sorted(got[d]) == want[d] for d in drivers), 120)
            got = await stored()
            ours = set(drivers)
            dead = await dlq.collect(lambda v: getattr(v, "key", None) in ours, count=10_000, timeout=5)
            missing = {d: sorted(set(want[d]) - set(got[d])) for d in drivers if sorted(got[d]) != want[d]}
            dead_seqs = sorted({(v.key, orjson.loads(v.payload).get("seq"), v.reason) for v in dead})  # type: ignore[attr-defined]
            lost = {d: len(m) for d, m in missing.items()}
            where = await whereabouts(stack, {d: m[:4] for d, m in list(missing.items())[:3]}) if missing else {}
            assert ok and not dead, (lost, len(dead), dead_seqs[:12], {d: m[:12] for d, m in missing.items()}, where)
            assert all(len(got[d]) == len(set(got[d])) for d in drivers), "a ping was stored twice"
            lag_ok = await wait_async(lambda: committed_lag(stack, group, "telemetry.raw"), lambda lag: lag == 0, 30)
            assert lag_ok, await committed_lag(stack, group, "telemetry.raw", detail=True)
        finally:
            stop.set()
            if load is not None and not load.done():
                load.cancel()
            a.stop()
            b.stop()
            mongo.close()


@pytest.mark.timeout(300)
async def test_a_redis_crash_does_not_stop_the_worker_and_state_catches_up(  # type: ignore[no-untyped-def]
    stack: Settings, tmp_path, producer, uid: str
) -> None:
    """Redis killed with -9 under load and back 4 s later (append-only file, as in production).

    The worker must ride it out: steps retry with backoff while Redis is away, the worker never
    exits, and every driver's live state reaches its last ping soon after Redis is back. The
    publishers too: booking events arriving meanwhile wait for Redis (their replay streams),
    they do not crash the worker (the booking publisher once did, in every live worker).
    """
    import subprocess
    import time

    port = free_port()

    def redis_server() -> subprocess.Popen[bytes]:
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                "--appendfsync", "always", "--dir", str(tmp_path)]  # fmt: skip
        server = subprocess.Popen(args, stdout=DEVNULL, stderr=DEVNULL)
        assert wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                                               text=True).stdout.strip() == "PONG", 20, 0.1)  # fmt: skip
        return server

    server = redis_server()
    r = Redis(host="127.0.0.1", port=port, db=stack.redis_db, decode_responses=True)
    env = {"FLEETSTREAM_AGENTS": "clean,driver_state,publish", "FLEETSTREAM_REDIS_PORT": str(port)}
    p = Pipeline(stack, tmp_path, f"test-redis-crash-{uid}", **env)
    from schemas import BookingEvent, GeoPoint
    from schemas.contracts import customer_audience, replay_key

    customer = f"rc-customer-{uid}"
    booked = [BookingEvent(type="booking.requested", booking_id=uuid.uuid4(), status="requested",
                           customer_id=customer, pickup=GeoPoint(lat=52.5, lon=13.4)) for _ in range(5)]  # fmt: skip
    drivers = [f"rc{i}-{uid}" for i in range(16)]
    last = dict.fromkeys(drivers, -1)
    stop = asyncio.Event()
    t0 = datetime.now(UTC) - timedelta(hours=1)

    async def produce() -> None:
        raw, seq = stack.topic("telemetry.raw"), 0
        while not stop.is_set():
            for d in drivers:
                await producer.send_and_wait(raw, encode(batch(d, seq, t0 + timedelta(seconds=seq), n=1)),
                                             key=d.encode())  # fmt: skip
                last[d] = seq
            seq += 1
            await asyncio.sleep(0.2)

    async def states() -> dict[str, int]:
        pipe = r.pipeline()
        for d in drivers:
            pipe.hget(driver_key(d), "seq")
        return {d: int(s) if s is not None else -1 for d, s in zip(drivers, await pipe.execute(), strict=True)}

    load = None
    try:
        p.start_worker()
        load = asyncio.create_task(produce())
        assert await wait_async(states, lambda got: min(got.values()) >= 5, 60), p.worker.output()[-3000:]
        server.kill()
        server.wait(10)
        for e in booked:  # while Redis is away
            await producer.send_and_wait(stack.topic("bookings.events"), encode(e), key=str(e.booking_id).encode())
        await asyncio.sleep(4)
        server = redis_server()
        back = time.monotonic()
        await asyncio.sleep(3)
        stop.set()
        await load
        assert p.worker.popen.poll() is None, p.worker.output()[-4000:]  # never exited
        caught_up = await wait_async(states, lambda got: got == last, 60)
        took = time.monotonic() - back
        assert caught_up, (await states(), last, p.worker.output()[-3000:])
        assert p.worker.popen.poll() is None, p.worker.output()[-4000:]
        assert took < 15, f"live state caught up {took:.1f} s after Redis came back"
        stream = replay_key(customer_audience(customer))
        heard = await wait_async(lambda: r.xlen(stream), lambda n: n >= len(booked), 30)
        assert heard, (await r.xlen(stream), p.worker.output()[-3000:])
        assert await r.xlen(stream) == len(booked)  # retried, not appended twice
    finally:
        stop.set()
        if load is not None and not load.done():
            load.cancel()
        p.stop()
        await r.aclose()
        server.kill()


@pytest.mark.timeout(300)
async def test_a_mongodb_crash_does_not_stop_the_store_and_loses_no_ping(  # type: ignore[no-untyped-def]
    stack: Settings, tmp_path, producer, uid: str
) -> None:
    """The MongoDB server (a private FerretDB) killed with -9 under load and back 5 s later.

    The store worker waits for it (its writes retry with backoff, nothing is acknowledged
    meanwhile), never exits, and afterwards every ping is stored exactly once: writes that
    reached the server before the kill and were retried after it are not stored twice.
    """
    import subprocess

    from motor.motor_asyncio import AsyncIOMotorClient

    from schemas.track import bucket_pings

    port = free_port()
    binary = _ferretdb_binary(stack)
    data = tmp_path / "ferretdb"
    data.mkdir()

    def mongo_server() -> subprocess.Popen[bytes]:
        args = [str(binary), "--listen-addr", f"127.0.0.1:{port}", "--sqlite-dir", str(data)]
        server = subprocess.Popen(args, stdout=DEVNULL, stderr=DEVNULL)
        assert wait_for(lambda: _mongo_answers(port), 30, 0.2)
        return server

    server = mongo_server()
    env = {"FLEETSTREAM_AGENTS": "store", "FLEETSTREAM_MONGO_PORT": str(port), "FLEETSTREAM_HISTORY_FLUSH_S": "1"}
    p = Pipeline(stack, tmp_path, f"test-mongo-crash-{uid}", **env)
    drivers = [f"mc{i}-{uid}" for i in range(16)]
    sent = dict.fromkeys(drivers, 0)
    stop = asyncio.Event()
    t0 = datetime.now(UTC) - timedelta(hours=1)
    mongo = AsyncIOMotorClient(f"mongodb://127.0.0.1:{port}/", tz_aware=True)
    db = mongo[stack.mongo_db]

    async def produce() -> None:
        clean, seq = stack.topic("telemetry.clean"), 0
        while not stop.is_set():
            for d in drivers:
                await producer.send_and_wait(clean, encode(batch(d, seq, t0 + timedelta(seconds=seq), n=1)),
                                             key=d.encode())  # fmt: skip
                sent[d] = seq + 1
            seq += 1
            await asyncio.sleep(0.1)

    async def stored() -> dict[str, list[int]]:
        out: dict[str, list[int]] = {d: [] for d in drivers}
        fields = {"pings": 1, "fmt": 1, "driver_id": 1}
        async for doc in db.tracks.find({"driver_id": {"$in": drivers}}, fields):
            out[doc["driver_id"]] += [q["seq"] for q in bucket_pings(doc)]
        return out

    load = None
    try:
        p.start_worker()
        load = asyncio.create_task(produce())
        await asyncio.sleep(4)
        server.kill()
        server.wait(10)
        await asyncio.sleep(5)
        server = mongo_server()
        await asyncio.sleep(3)
        stop.set()
        await load
        want = {d: list(range(n)) for d, n in sent.items()}
        ok = await wait_async(stored, lambda got: all(sorted(got[d]) == want[d] for d in drivers), 90)
        got = await stored()
        assert p.worker.popen.poll() is None, p.worker.output()[-4000:]  # never exited
        short = {d: sorted(set(want[d]) - set(got[d]))[:8] for d in drivers if set(got[d]) != set(want[d])}
        assert ok, (short, {d: len(got[d]) - len(set(got[d])) for d in drivers}, p.worker.output()[-2000:])
    finally:
        stop.set()
        if load is not None and not load.done():
            load.cancel()
        p.stop()
        mongo.close()
        server.kill()


def _ferretdb_binary(stack: Settings) -> Path:
    """The FerretDB this checkout built, or the one the running stack's server runs from."""
    import psutil

    from fleetstream.stack.services import FerretDB

    built = FerretDB("ferretdb", stack.mongo_port, stack).binary
    if built.exists():
        return built
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if any(a == f"{stack.host}:{stack.mongo_port}" for a in cmd) and "ferretdb" in Path(cmd[0]).name:
            return Path(cmd[0])
    pytest.skip(f"no FerretDB binary: {built} is not built and the stack's server is not a FerretDB process")


def _mongo_answers(port: int) -> bool:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=500, connectTimeoutMS=500
    )
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


@pytest.mark.timeout(300)
async def test_a_rabbitmq_restart_does_not_stop_the_worker_and_locations_flow_again(  # type: ignore[no-untyped-def]
    stack: Settings, tmp_path, producer, uid: str
) -> None:
    """The stack's RabbitMQ stopped under load and started again (about 10 s away).

    The worker waits for it (the publish step retries with backoff), never exits, keeps live
    state in Redis current meanwhile, and its drivers' locations reach a subscriber again once
    RabbitMQ is back: a new one, and a notification hub's socket subscribed before (the hub
    binds its patterns again on the new connection).
    """
    import time

    import aio_pika
    import orjson

    from api.notify import NotificationHub, Subscriber
    from fleetstream.stack.manager import Stack
    from fleetstream.stack.process import PidRecord
    from schemas.contracts import EXCHANGE, LOCATIONS_KEY, LOCATIONS_PATTERN

    rabbit = Stack(stack, only=["rabbitmq"])
    record = PidRecord.read(rabbit.services[0].pid_file)
    if record is None or not record.alive():
        pytest.skip("this stack's RabbitMQ was not started from this checkout: not ours to restart")
    env = {"FLEETSTREAM_AGENTS": "clean,driver_state,publish", "FLEETSTREAM_LOCATION_PUBLISH_INTERVAL_S": "0"}
    p = Pipeline(stack, tmp_path, f"test-rabbit-restart-{uid}", **env)
    drivers = [f"rq{i}-{uid}" for i in range(8)]
    last = dict.fromkeys(drivers, -1)
    stop = asyncio.Event()
    t0 = datetime.now(UTC) - timedelta(hours=1)
    r = Redis.from_url(stack.redis_dsn, decode_responses=True)

    async def produce() -> None:
        raw, seq = stack.topic("telemetry.raw"), 0
        while not stop.is_set():
            for d in drivers:
                await producer.send_and_wait(raw, encode(batch(d, seq, t0 + timedelta(seconds=seq), n=1)),
                                             key=d.encode())  # fmt: skip
                last[d] = seq
            seq += 1
            await asyncio.sleep(0.2)

    async def locations_heard(timeout: float) -> set[str]:
        """Drivers of ours whose location a new subscriber hears within ``timeout``."""
        conn = await aio_pika.connect(stack.rabbitmq_dsn)
        heard: set[str] = set()
        try:
            ch = await conn.channel()
            ex = await ch.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            q = await ch.declare_queue(exclusive=True)
            await q.bind(ex, routing_key=LOCATIONS_KEY)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and heard != set(drivers):
                msg = await q.get(fail=False)
                if msg is None:
                    await asyncio.sleep(0.1)
                    continue
                heard |= {loc["driver_id"] for loc in orjson.loads(msg.body)["locations"]} & set(drivers)
        finally:
            await conn.close()
        return heard

    async def seqs() -> dict[str, int]:
        pipe = r.pipeline()
        for d in drivers:
            pipe.hget(driver_key(d), "seq")
        return {d: int(s) if s is not None else -1 for d, s in zip(drivers, await pipe.execute(), strict=True)}

    async def socket_heard(sub: Subscriber, timeout: float) -> set[str]:
        heard: set[str] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and heard != set(drivers):
            while sub.pending:
                heard |= {orjson.loads(sub.pending.popleft().text).get("driver_id")} & set(drivers)
            await asyncio.sleep(0.1)
        return heard

    load = None
    hub = NotificationHub(stack)
    hub.start()
    try:
        p.start_worker()
        sub = await hub.subscribe([LOCATIONS_PATTERN], 100_000)
        load = asyncio.create_task(produce())
        assert await locations_heard(30) == set(drivers), p.worker.output()[-3000:]
        assert await socket_heard(sub, 30) == set(drivers)
        await asyncio.to_thread(rabbit.down)
        await asyncio.sleep(3)
        await asyncio.to_thread(rabbit.up)
        heard = await locations_heard(30)
        assert p.worker.popen.poll() is None, p.worker.output()[-4000:]  # never exited
        assert heard == set(drivers), (sorted(set(drivers) - heard), p.worker.output()[-3000:])
        sub.pending.clear()  # what it heard before the restart
        assert await socket_heard(sub, 30) == set(drivers)  # the socket subscribed before hears them again

        async def gap_flagged() -> bool:
            return sub.gap

        # Told, once its bindings were back, to send what the gone queue missed from the replay stream.
        assert await wait_async(gap_flagged, bool, 10)
        stop.set()
        await load
        assert await wait_async(seqs, lambda got: got == last, 30), (await seqs(), last)
        assert p.worker.popen.poll() is None, p.worker.output()[-4000:]
    finally:
        await hub.stop()
        stop.set()
        if load is not None and not load.done():
            load.cancel()
        p.stop()
        await r.aclose()
        await asyncio.to_thread(rabbit.up)  # whatever happened, the stack is whole for the next test
