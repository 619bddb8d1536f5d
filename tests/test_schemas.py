"""Schemas: valid messages round-trip exactly; invalid ones fail naming the field."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import (
    BookingCommand,
    BookingEvent,
    DriverStatusEvent,
    GeoPoint,
    GpsPing,
    IngestPing,
    TelemetryBatch,
    decode,
    encode,
)
from schemas.codec import encode_with_pings
from schemas.track import bucket_from_record, bucket_pings, track_bucket

ident = st.from_regex(r"[A-Za-z0-9_\-]{1,64}", fullmatch=True)
instant = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
lat = st.floats(-90, 90, allow_nan=False)
lon = st.floats(-180, 180, allow_nan=False)


@st.composite
def pings(draw: st.DrawFn, driver: str | None = None) -> GpsPing:
    return GpsPing(
        driver_id=driver or draw(ident),
        seq=draw(st.integers(0, 2**53)),
        ts=draw(instant),
        lat=draw(lat),
        lon=draw(lon),
        accuracy_m=draw(st.none() | st.floats(0, 100_000)),
        speed_mps=draw(st.none() | st.floats(0, 150)),
        heading_deg=draw(st.none() | st.floats(0, 360, exclude_max=True)),
    )


@st.composite
def batches(draw: st.DrawFn) -> TelemetryBatch:
    driver = draw(ident)
    return TelemetryBatch(
        driver_id=driver,
        occurred_at=draw(instant),
        pings=draw(st.lists(pings(driver), min_size=1, max_size=20)),
    )


@st.composite
def booking_events(draw: st.DrawFn) -> BookingEvent:
    return BookingEvent(
        type=draw(st.sampled_from(["booking.requested", "booking.assigned", "booking.cancelled"])),
        booking_id=draw(st.uuids()),
        status=draw(st.sampled_from(["requested", "assigned", "cancelled"])),
        customer_id=draw(ident),
        driver_id=draw(st.none() | ident),
        pickup=GeoPoint(lat=draw(lat), lon=draw(lon)),
        reason=draw(st.none() | st.text(max_size=500)),
        occurred_at=draw(instant),
    )


@settings(max_examples=200, deadline=None)
@given(batches())
def test_telemetry_batch_round_trips_exactly(batch: TelemetryBatch) -> None:
    back = decode(encode(batch))
    assert type(back) is TelemetryBatch
    assert back == batch
    assert encode(back) == encode(batch)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_track_bucket_keeps_every_ping(batch: TelemetryBatch) -> None:
    pings = sorted(batch.pings, key=lambda p: p.seq)
    doc = track_bucket(batch.driver_id, pings)
    back = bucket_pings(doc)
    assert [(p["seq"], p["ts"], p["lat"], p["lon"]) for p in back] == [(p.seq, p.ts, p.lat, p.lon) for p in pings]
    for got, want in zip(back, pings, strict=True):
        for f in ("accuracy_m", "speed_mps", "heading_deg"):
            w = getattr(want, f)
            assert (got[f] is None) == (w is None)
            if w is not None:  # stored as float32
                assert math.isclose(got[f], w, rel_tol=1e-6, abs_tol=1e-30)
    assert doc["_id"] == f"{batch.driver_id}:{pings[0].seq}" and doc["n"] == len(pings)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_bucket_read_from_the_record_equals_the_one_from_the_model(batch: TelemetryBatch) -> None:
    """The history sink's fast reader (orjson, no models) stores exactly what the schema path stores."""
    by_seq = {p.seq: p for p in batch.pings}
    ordered = batch.model_copy(update={"pings": [by_seq[s] for s in sorted(by_seq)]})
    fast = bucket_from_record(encode(ordered))
    assert fast is not None
    doc, last = fast
    assert doc == track_bucket(ordered.driver_id, ordered.pings)
    want = ordered.pings[-1]
    assert (last["seq"], last["ts"], last["lat"], last["speed_mps"]) == (want.seq, want.ts, want.lat, want.speed_mps)
    if len(by_seq) > 1:  # out of seq order: left to the schema path, whose bucket is in seq order
        backwards = ordered.model_copy(update={"pings": ordered.pings[::-1]})
        assert bucket_from_record(encode(backwards)) is None
        assert track_bucket(backwards.driver_id, backwards.pings) == doc


@settings(max_examples=200, deadline=None)
@given(batches(), st.booleans())
def test_a_batch_encoded_with_the_devices_json_decodes_to_the_same_batch(batch: TelemetryBatch, compact: bool) -> None:
    """The API writes a fully valid request's pings as the device sent them (``encode_with_pings``)."""
    sent = [p.model_dump(mode="json") for p in batch.pings]
    if compact:  # what devices may send instead of our encoder's form: whole numbers, no null fields
        sent = [{k: (int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else v)
                 for k, v in p.items() if v is not None} for p in sent]  # fmt: skip
    record = encode_with_pings(batch, orjson.dumps(sent))
    assert decode(record) == batch
    assert decode(record).event_id == batch.event_id


def test_bucket_reader_declines_what_is_not_a_clean_batch() -> None:
    ping = {"driver_id": "d1", "seq": 1, "ts": "2026-01-01T00:00:00Z", "lat": 1.0, "lon": 2.0}
    good = {"type": "telemetry.batch", "driver_id": "d1", "pings": [ping]}
    assert bucket_from_record(json.dumps(good).encode()) is not None
    for bad in (
        b"{not json",
        json.dumps({**good, "type": "driver.status"}).encode(),
        json.dumps({**good, "pings": []}).encode(),
        json.dumps({**good, "pings": [{**ping, "driver_id": "d2"}]}).encode(),
        json.dumps({**good, "pings": [{**ping, "ts": "2026-01-01T00:00:00"}]}).encode(),  # no offset
        json.dumps({**good, "pings": [{**ping, "ts": 1767225600}]}).encode(),
        json.dumps({**good, "pings": [{**ping, "lat": "1.0"}]}).encode(),
        json.dumps({**good, "pings": [{**ping, "seq": 1.5}]}).encode(),
    ):
        assert bucket_from_record(bad) is None, bad


def test_track_bucket_of_unknown_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="format"):
        bucket_pings({"_id": "x", "fmt": 99, "pings": b""})


@settings(max_examples=100, deadline=None)
@given(booking_events())
def test_booking_event_round_trips_exactly(event: BookingEvent) -> None:
    assert decode(encode(event)) == event


def test_status_event_decodes_to_its_own_type() -> None:
    ev = DriverStatusEvent(driver_id="d1", status="online", last_seen=datetime.now(UTC))
    assert type(decode(encode(ev))) is DriverStatusEvent


def _fields(exc: ValidationError) -> set[str]:
    return {str(part) for err in exc.errors() for part in err["loc"]}


def _ping(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"driver_id": "d1", "seq": 1, "ts": datetime.now(UTC).isoformat(), "lat": 1.0, "lon": 2.0}
    return {**base, **over}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lat", 90.0001),
        ("lat", -91),
        ("lon", 180.5),
        ("lon", -1000),
        ("lat", math.nan),
        ("lon", math.inf),
        ("speed_mps", -1),
        ("heading_deg", 360),
        ("accuracy_m", math.nan),
        ("seq", -1),
        ("driver_id", "has space"),
        ("driver_id", "x" * 65),
        ("ts", "2026-01-01T00:00:00"),  # naive: no timezone
    ],
)
def test_invalid_ping_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        GpsPing.model_validate(_ping(**{field: value}))
    assert field in _fields(exc.value)


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not (-90 <= x <= 90)))
def test_any_out_of_range_latitude_is_rejected(bad: float) -> None:
    with pytest.raises(ValidationError) as exc:
        GpsPing.model_validate(_ping(lat=bad))
    assert "lat" in _fields(exc.value)


def test_nan_in_json_is_rejected_when_decoding_bytes() -> None:
    raw = json.dumps({"type": "telemetry.batch", "driver_id": "d1", "pings": [_ping(lat=float("nan"))]})
    with pytest.raises(ValidationError) as exc:
        decode(raw.encode())
    assert "lat" in _fields(exc.value)


def test_device_clock_checked_at_ingest_only() -> None:
    now = datetime.now(UTC)
    future = _ping(ts=(now + timedelta(hours=2)).isoformat())
    old = _ping(ts=(now - timedelta(days=30)).isoformat())
    for bad, word in ((future, "future"), (old, "horizon")):
        with pytest.raises(ValidationError) as exc:
            IngestPing.model_validate(bad, context={"now": now})
        assert "ts" in _fields(exc.value)
        assert word in str(exc.value)
        # Replaying an old record from Kafka (no ingest context) must still decode.
        assert GpsPing.model_validate(bad).driver_id == "d1"


def test_oversized_batch_and_strings_rejected() -> None:
    from core.config import get_settings

    limit = get_settings().max_batch_pings
    pings = [_ping(seq=i) for i in range(limit + 1)]
    with pytest.raises(ValidationError) as exc:
        TelemetryBatch.model_validate({"driver_id": "d1", "pings": pings})
    assert "pings" in _fields(exc.value)
    with pytest.raises(ValidationError) as exc:
        BookingCommand.model_validate(
            {
                "type": "booking.cancel",
                "booking_id": str(uuid.uuid4()),
                "actor_id": "c1",
                "actor_role": "customer",
                "reason": "x" * 501,
            }
        )
    assert "reason" in _fields(exc.value)


def test_batch_rejects_pings_of_another_driver() -> None:
    with pytest.raises(ValidationError, match="differs from batch driver_id"):
        TelemetryBatch.model_validate({"driver_id": "d1", "pings": [_ping(driver_id="d2")]})


def test_unknown_fields_and_types_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        GpsPing.model_validate(_ping(altitude=3))
    assert "altitude" in _fields(exc.value)
    with pytest.raises(ValidationError):
        decode(b'{"type": "no.such.type"}')


def test_booking_request_needs_route() -> None:
    with pytest.raises(ValidationError, match="pickup and dropoff"):
        BookingCommand(type="booking.request", booking_id=uuid.uuid4(), actor_id="c1", actor_role="customer")


def test_schema_export_writes_valid_json_schema(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from schemas.export import export_json_schemas

    paths = export_json_schemas(tmp_path)
    names = {p.name for p in paths}
    assert {"GpsPing.json", "TelemetryBatch.json", "BookingEvent.json", "Message.json"} <= names
    ping_schema = json.loads((tmp_path / "GpsPing.json").read_text())
    assert ping_schema["properties"]["lat"]["maximum"] == 90.0
    assert "seq" in ping_schema["required"]


def test_ingest_normalises_device_time_to_utc() -> None:
    local = datetime.now(UTC).astimezone(timezone(timedelta(hours=2)))
    ping = IngestPing.model_validate(_ping(ts=local.isoformat()), context={"now": datetime.now(UTC)})
    assert ping.ts.utcoffset() == timedelta(0) and ping.ts == local
    assert encode(ping).count(b"+02:00") == 0


def test_ingest_validation_fast_and_slow_paths_agree() -> None:
    """The fast path (field rules, then one loop over clock and offset) must reject what IngestPing rejects."""
    from api.ingest import validate
    from api.security import Principal
    from core.config import get_settings

    me, s = Principal(subject="dev", role="driver", driver_id="d1"), get_settings()
    now = datetime.now(UTC)
    fine = [_ping(seq=i, ts=(now - timedelta(seconds=i)).isoformat()) for i in range(3)]
    good, bad, as_sent = validate([dict(p) for p in fine], me, s)
    assert [p.seq for p in good] == [0, 1, 2] and bad == [] and as_sent
    future = _ping(seq=9, ts=(now + timedelta(seconds=s.max_future_skew_s + 60)).isoformat())
    ancient = _ping(seq=10, ts=(now - timedelta(seconds=s.max_ping_age_s + 60)).isoformat())
    local = _ping(seq=11, ts=now.astimezone(timezone(timedelta(hours=-5))).isoformat())
    good, bad, as_sent = validate([dict(p) for p in [*fine, future, ancient, local]], me, s)
    assert [p.seq for p in good] == [0, 1, 2, 11] and not as_sent
    assert good[-1].ts.utcoffset() == timedelta(0)  # normalised on the slow path
    assert [b["index"] for b in bad] == [3, 4]
    assert "future" in bad[0]["reasons"][0]["error"] and "old" in bad[1]["reasons"][0]["error"]
    # All valid, but one not in UTC: normalised on the slow path, so not written as sent.
    good, bad, as_sent = validate([dict(p) for p in [*fine, local]], me, s)
    assert len(good) == 4 and bad == [] and not as_sent


def test_each_deployment_names_its_own_redis_database() -> None:
    """Redis keys carry no namespace: the database number keeps deployments apart (the URL wins when given)."""
    from core.config import Settings

    assert Settings(redis_db=2, redis_url=None).redis_dsn.endswith(":6379/2")
    assert Settings(redis_db=2, redis_url="redis://elsewhere:7000/5").redis_dsn == "redis://elsewhere:7000/5"
    assert Settings(redis_url=None).redis_dsn.endswith("/1")  # this test run's own (tests/conftest.py)
    with pytest.raises(ValueError):
        Settings(redis_db=16)


@pytest.mark.parametrize("bad", ["a.b", "a:b", "a*", "a#", "a b", "a/b", "", "x" * 65])
def test_ids_are_restricted_to_a_key_safe_alphabet(bad: str) -> None:
    """A dot, star or colon in an id would form another driver's Redis key or RabbitMQ routing key."""
    now = datetime.now(UTC)
    with pytest.raises(ValidationError):
        GpsPing(driver_id=bad, seq=1, ts=now, lat=0, lon=0)


@pytest.mark.parametrize("ts", ["0001-01-01T00:30:00+05:00", "9999-12-31T23:30:00-05:00", "0001-01-01T00:00:00+00:01"])
def test_timestamps_that_overflow_in_utc_are_a_validation_error(ts: str) -> None:
    """Not an OverflowError (a 500 at the API): pings, booking windows and events alike."""
    from schemas.bookings import TimeWindow

    with pytest.raises(ValidationError, match="out of range"):
        IngestPing.model_validate({"driver_id": "d", "seq": 1, "ts": ts, "lat": 0, "lon": 0})
    with pytest.raises(ValidationError, match="out of range"):
        TimeWindow.model_validate({"start": ts, "end": "2030-01-01T00:00:00Z"})


def test_service_points_stay_inside_the_geo_index_range() -> None:
    from schemas.base import GEO_MAX_LAT, ServicePoint

    assert ServicePoint(lat=GEO_MAX_LAT, lon=0).lat == GEO_MAX_LAT
    with pytest.raises(ValidationError):
        ServicePoint(lat=86, lon=0)
    assert GeoPoint(lat=86, lon=0).lat == 86  # a fix there is still valid WGS84


async def test_isolate_dead_letters_only_the_items_that_fail_alone() -> None:
    """The poison-record harness: a batch that fails is re-run item by item, in memory."""
    from streams.poison import isolate

    done: list[int] = []
    dead: list[tuple[int, str]] = []

    async def run(items: list[int]) -> None:
        if 13 in items:
            raise ValueError("unlucky")
        done.extend(items)

    async def bury(item: int, exc: BaseException) -> None:
        dead.append((item, str(exc)))

    assert await isolate([1, 13, 2], run, bury, 1.0, "t") == 1
    assert done == [1, 2] and dead == [(13, "unlucky")]
    done.clear()
    assert await isolate([3, 4], run, bury, 1.0, "t") == 0 and done == [3, 4]


async def test_isolate_waits_out_a_server_and_then_gives_up() -> None:
    """Transient errors are retried (a restarting Redis), not dead-lettered; past the budget the step stops."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from streams.poison import ServerUnavailable, isolate, transient

    calls = 0

    async def flaky(items: list[int]) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RedisConnectionError("connection refused")

    async def bury(item: int, exc: BaseException) -> None:
        raise AssertionError("a transient failure must not dead-letter")

    assert await isolate([1, 2], flaky, bury, 5.0, "t") == 0 and calls == 3

    async def down(items: list[int]) -> None:
        raise RedisConnectionError("connection refused")

    with pytest.raises(ServerUnavailable):
        await isolate([1], down, bury, 0.3, "t")
    assert transient(RuntimeError("Connection was not opened")) and not transient(ValueError("bad lat"))


def test_socket_messages_are_models_the_web_ui_is_typed_from() -> None:
    from pydantic import TypeAdapter

    from schemas import BookingEvent, EtaUpdate
    from schemas.notifications import BookingNotice, EtaNotice, SocketMessage

    booking = uuid.uuid4()
    event = BookingEvent(type="booking.assigned", booking_id=booking, status="assigned", customer_id="c1",
                         driver_id="d1", version=3, pickup={"lat": 52.5, "lon": 13.4})  # fmt: skip
    body = BookingNotice.of(event).model_dump(mode="json")
    assert body["type"] == "booking.assigned" and body["event_id"] == str(event.event_id)
    assert body["status"] == "assigned" and body["version"] == 3 and body["pickup"] == {"lat": 52.5, "lon": 13.4}
    eta = EtaUpdate(booking_id=booking, driver_id="d1", phase="to_pickup", eta_s=90.0, distance_m=800.0, lat=1, lon=2)
    adapter: TypeAdapter[object] = TypeAdapter(SocketMessage)
    # What a socket receives (with its replay id) reads back as the model its type names.
    assert isinstance(adapter.validate_python({**body, "id": "1-0"}), BookingNotice)
    assert isinstance(adapter.validate_json(EtaNotice.of(eta).model_dump_json()), EtaNotice)
    with pytest.raises(ValidationError):
        adapter.validate_python({**body, "surprise": 1})  # a field the UI does not know is a contract change
    from api.main import create_app

    components = create_app().openapi()["components"]["schemas"]
    assert {"BookingNotice", "EtaNotice", "DriverLocation", "Heartbeat"} <= set(components)
