"""Each backing service answers for real: Kafka, Redis geo, RabbitMQ, MongoDB wire (FerretDB)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
import redis.asyncio as aioredis
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import DuplicateKeyError

from core.config import Settings
from core.kafka import make_consumer
from schemas import GpsPing, TelemetryBatch, decode, encode

pytestmark = pytest.mark.usefixtures("stack")


async def test_kafka_round_trip_on_project_topic(stack: Settings, producer, uid: str) -> None:  # type: ignore[no-untyped-def]
    batch = TelemetryBatch(
        driver_id=f"rt-{uid}",
        pings=[GpsPing(driver_id=f"rt-{uid}", seq=1, ts=datetime.now(UTC), lat=52.5, lon=13.4)],
    )
    meta = await producer.send_and_wait(stack.topic("telemetry.raw"), encode(batch), key=batch.driver_id.encode())
    consumer = make_consumer(stack)
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        tp = TopicPartition(stack.topic("telemetry.raw"), meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        msg = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    assert msg.key == batch.driver_id.encode()
    assert decode(msg.value) == batch


async def test_same_key_lands_on_same_partition(stack: Settings, producer, uid: str) -> None:  # type: ignore[no-untyped-def]
    key = f"drv-{uid}".encode()
    parts = {(await producer.send_and_wait(stack.topic("telemetry.raw"), b"{}", key=key)).partition for _ in range(5)}
    assert len(parts) == 1


async def test_redis_geo_index(stack: Settings, uid: str) -> None:
    r = aioredis.from_url(stack.redis_dsn)
    key = f"test:geo:{uid}"
    try:
        async with r.pipeline(transaction=False) as pipe:
            pipe.geoadd(key, (13.4050, 52.5200, "near"))
            pipe.geoadd(key, (13.4100, 52.5210, "close"))
            pipe.geoadd(key, (2.3522, 48.8566, "paris"))
            await pipe.execute()
        found = await r.geosearch(key, longitude=13.405, latitude=52.52, radius=2, unit="km", sort="ASC", withdist=True)
        names = [m[0].decode() for m in found]
        assert names == ["near", "close"]
        assert found[1][1] > 0.3  # km between the two Berlin points
    finally:
        await r.delete(key)
        await r.aclose()


async def test_pipeline_scripts_load_themselves_on_noscript(stack: Settings, uid: str) -> None:
    """Bare EVALSHA in a pipeline (``core.clients``); NOSCRIPT, as from a restarted Redis, loads and reruns."""
    from core.clients import Lua, execute

    r = aioredis.from_url(stack.redis_dsn, decode_responses=True)
    key = f"test:lua:{uid}"
    # A script no other test uses: flushing the whole cache would pull scripts from under running workers.
    bump = Lua(f"-- {uid}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        assert await r.script_exists(bump.sha) == [False]

        def build(pipe) -> None:  # type: ignore[no-untyped-def]
            bump.queue(pipe, [key], [5])
            pipe.expire(key, 60)

        assert await execute(r, build, [bump]) == [5, True]  # NOSCRIPT first, then loaded and rerun once
        assert await r.script_exists(bump.sha) == [True]
        assert await execute(r, build, [bump]) == [10, True]
        assert await r.get(key) == "10"  # the script ran once per execute, not on the failed attempt
    finally:
        await r.delete(key)
        await r.aclose()


async def test_position_update_applies_each_seq_once(stack: Settings, uid: str) -> None:
    """The driver-state script (``streams.driver_state``) ignores a fix not newer than Redis holds (a replay)."""
    from core.clients import Lua, execute
    from schemas.contracts import GEO_KEY, KNOWN_KEY, SEEN_KEY, driver_key
    from streams.driver_state import UPDATE_POSITION, position_keys

    r = aioredis.from_url(stack.redis_dsn, decode_responses=True)
    driver = f"seq-{uid}"
    update = Lua(UPDATE_POSITION)

    async def post(seq: int, lat: float, now: float) -> int:
        keys = position_keys(driver)
        args = [driver, repr(lat), "13.4", "5.0", "90.0", f"2026-01-01T00:00:{seq:02d}+00:00", seq, repr(now)]
        (result,) = await execute(r, lambda pipe: update.queue(pipe, keys, args), [update])
        return int(result)

    try:
        assert await post(5, 52.5, 1000.0) == 1  # unknown driver: came online
        assert await post(5, 52.6, 1001.0) == -1  # the same batch replayed
        assert await post(3, 52.7, 1002.0) == -1  # an older one
        state = await r.hgetall(driver_key(driver))
        assert (state["seq"], state["lat"], state["seen"]) == ("5", "52.5", "1000.0")
        assert await r.zscore(SEEN_KEY, driver) == 1000.0
        assert await r.zscore(KNOWN_KEY, driver) == 1000.0  # on the dispatcher's map, even once offline
        assert await post(6, 52.8, 1003.0) == 0  # newer: applied, still online
        state = await r.hgetall(driver_key(driver))
        assert (state["seq"], state["lat"], state["status"]) == ("6", "52.8", "online")
    finally:
        await r.delete(driver_key(driver))
        await r.zrem(SEEN_KEY, driver)
        await r.zrem(KNOWN_KEY, driver)
        await r.zrem(GEO_KEY, driver)
        await r.aclose()


async def test_rabbitmq_topic_exchange_routes_by_key(stack: Settings, uid: str) -> None:
    conn = await aio_pika.connect_robust(stack.rabbitmq_dsn)
    try:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.declare_exchange(f"test.{uid}", aio_pika.ExchangeType.TOPIC, auto_delete=True)
        q = await ch.declare_queue(exclusive=True)
        await q.bind(ex, routing_key="booking.*.eta")
        for rk in ("booking.b1.eta", "booking.b1.location", "driver.d1.eta"):
            await ex.publish(aio_pika.Message(rk.encode()), routing_key=rk)
        got = []
        async with q.iterator(timeout=5) as it:
            async for m in it:
                async with m.process():
                    got.append(m.body.decode())
                if got:
                    break
        await asyncio.sleep(0.3)
        assert got == ["booking.b1.eta"]
        assert (await q.declare()).message_count == 0  # the other two were not routed here
    finally:
        await conn.close()


async def test_mongo_wire_insert_find_upsert_unique(stack: Settings, uid: str) -> None:
    client: AsyncIOMotorClient = AsyncIOMotorClient(stack.mongo_dsn, tz_aware=True)
    coll = client[f"test_{uid}"]["pings"]
    try:
        await coll.create_index([("driver_id", 1), ("seq", 1)], unique=True, name="driver_seq")
        docs = [{"driver_id": "d1", "seq": i, "lat": 1.0 + i} for i in range(5)]
        await coll.insert_many(docs, ordered=False)
        with pytest.raises(DuplicateKeyError):
            await coll.insert_one({"driver_id": "d1", "seq": 3, "lat": 9.9})
        res = await coll.update_one({"_id": "driver:d1"}, {"$set": {"lat": 7.0}}, upsert=True)
        assert res.upserted_id == "driver:d1"
        await coll.update_one({"_id": "driver:d1"}, {"$set": {"lat": 8.0}}, upsert=True)
        found = [d async for d in coll.find({"driver_id": "d1"}).sort("seq", -1).limit(2)]
        assert [d["seq"] for d in found] == [4, 3]
        assert found[1]["lat"] == 4.0  # the duplicate did not overwrite
        assert (await coll.find_one({"_id": "driver:d1"}))["lat"] == 8.0
        assert await coll.count_documents({}) == 6
    finally:
        await client.drop_database(f"test_{uid}")
        client.close()


async def test_kafka_topics_have_declared_layout(stack: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from schemas.contracts import TELEMETRY_DLQ, TELEMETRY_RAW, TOPICS

    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_servers)
    await admin.start()
    try:
        described = {d["topic"]: d for d in await admin.describe_topics([stack.topic(t.name) for t in TOPICS])}
        assert len(described[stack.topic(TELEMETRY_RAW.name)]["partitions"]) >= 8
        dlq = stack.topic(TELEMETRY_DLQ.name)
        cfgs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, dlq)])
        entries = {e[0]: e[1] for e in cfgs[0].resources[0][4]}
        assert entries["cleanup.policy"] == "delete"
        assert entries["retention.ms"] == str(4 * 7 * 24 * 3600 * 1000)  # dead letters stay four weeks
    finally:
        await admin.close()


def test_unknown_topic_is_not_auto_created(stack: Settings) -> None:
    from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError

    from core.kafka import make_producer

    async def send() -> None:
        p = make_producer(stack, request_timeout_ms=3000)
        await p.start()
        try:
            await p.send_and_wait(f"no-such-topic-{uuid.uuid4().hex}", b"x")
        finally:
            await p.stop()

    with pytest.raises((KafkaTimeoutError, UnknownTopicOrPartitionError)):
        asyncio.run(send())


async def test_driver_state_sink_large_batches_newest_wins(stack: Settings, uid: str) -> None:
    """Hundreds of drivers in one write (FerretDB hangs on >= 100 updates in one batch) and replays."""
    from sinks.mongo import DriverStateSink

    client: AsyncIOMotorClient = AsyncIOMotorClient(stack.mongo_dsn, tz_aware=True, socketTimeoutMS=20_000)
    db = client[f"test_{uid}"]
    sink = DriverStateSink(db)
    try:
        docs = [{"_id": f"d{i}", "seq": s, "lat": float(s)} for s in (1, 3) for i in range(250)]
        await asyncio.wait_for(sink.write(docs), 60)
        await asyncio.wait_for(sink.write([{"_id": f"d{i}", "seq": 2, "lat": 2.0} for i in range(250)]), 60)  # older
        await asyncio.wait_for(sink.write([{"_id": "d7", "seq": 9, "lat": 9.0}]), 60)
        # A restarted sink knows no versions yet: it reads them before writing (a replay moves nothing back).
        restarted = DriverStateSink(db)
        await asyncio.wait_for(restarted.write([{"_id": f"d{i}", "seq": 2, "lat": 2.0} for i in range(5, 10)]), 60)
        await asyncio.wait_for(restarted.write([{"_id": "d1", "seq": 4, "lat": 4.0}]), 60)
        stored = {d["_id"]: d["seq"] async for d in db.drivers.find({})}
        assert len(stored) == 250
        assert {s for k, s in stored.items() if k not in ("d1", "d7")} == {3}
        assert stored["d7"] == 9 and stored["d1"] == 4
    finally:
        await client.drop_database(f"test_{uid}")
        client.close()
