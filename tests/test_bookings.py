"""Bookings end to end on the real stack: API → Kafka → booking agent / matching → Redis, MongoDB."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import redis

from core.config import Settings
from tests.conftest import Pipeline, bearer, wait_for

pytestmark = pytest.mark.usefixtures("stack")
PASSWORD = "correct horse battery"
CLAIM_LEASE_S = 4


@pytest.fixture(scope="module")
def city(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = Pipeline(
        stack,
        tmp_path_factory.mktemp("bookings"),
        f"test-bookings-{random.randrange(1 << 30)}",
        FLEETSTREAM_DEVICE_TOKEN_CACHE_S="0",
        FLEETSTREAM_OFFER_TIMEOUT_S="3",
        FLEETSTREAM_OFFER_CLAIM_LEASE_S=str(CLAIM_LEASE_S),
        FLEETSTREAM_MATCH_WINDOW_S="0.3",
        FLEETSTREAM_MATCH_TIMEOUT_S="15",
        FLEETSTREAM_MATCH_RADII_M="[500, 2000]",
        FLEETSTREAM_BOOKING_REPLY_TIMEOUT_S="10",
        FLEETSTREAM_LOGIN_MAX_ATTEMPTS_PER_ADDRESS="100000",  # every test customer logs in from 127.0.0.1
    )
    yield from p.running()


class Place:
    """A spot of our own in the open ocean, so other tests' drivers are never candidates."""

    def __init__(self) -> None:
        self.lat = random.uniform(-50, -30)
        self.lon = random.uniform(-140, -100)

    def at(self, north_m: float = 0.0) -> dict[str, float]:
        return {"lat": self.lat + north_m / 111_000, "lon": self.lon}


def customer(c: httpx.Client, name: str) -> dict[str, str]:
    email = f"{name}.{random.randrange(1 << 40)}@example.com"
    assert c.post("/v1/auth/register", json={"email": email, "password": PASSWORD, "name": name}).status_code == 201
    return bearer(c.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"])


def driver_online(c: httpx.Client, city: Pipeline, place: Place, north_m: float) -> tuple[str, dict[str, str]]:
    """A driver account whose phone posts a fix at ``north_m`` of the place, available for matching."""
    driver = f"drv-{random.randrange(1 << 40)}"
    token = city.device_token(driver)
    pos = place.at(north_m)
    ping = {"seq": 1, "ts": datetime.now(UTC).isoformat(), "accuracy_m": 5.0, **pos}
    assert c.post("/v1/telemetry", json={"pings": [ping]}, headers=bearer(token)).status_code == 202
    # Known to the live state (matching may reserve the driver at once, so not "in the geo index").
    r = redis.Redis.from_url(city.settings.redis_dsn)
    assert wait_for(lambda: r.hget(f"driver:{driver}", "status") is not None, 20, 0.2), "driver never seen"
    return driver, bearer(token)


def in_geo_index(settings: Settings, driver: str) -> bool:
    return redis.Redis.from_url(settings.redis_dsn).geopos("drivers:geo:available", driver)[0] is not None


def book(c: httpx.Client, auth: dict[str, str], place: Place, key: str | None = None) -> httpx.Response:
    headers = {**auth, **({"Idempotency-Key": key} if key else {})}
    body = {"pickup": place.at(), "dropoff": place.at(3000), "parcel_size": "small", "notes": "ring twice"}
    return c.post("/v1/bookings", json=body, headers=headers)


def status_of(c: httpx.Client, auth: dict[str, str], booking_id: str) -> dict[str, Any]:
    return c.get(f"/v1/bookings/{booking_id}", headers=auth).json()


def until_status(c: httpx.Client, auth: dict[str, str], booking_id: str, want: str, timeout: float = 30) -> dict:
    seen: dict[str, Any] = {}

    def check() -> bool:
        seen.update(status_of(c, auth, booking_id))
        return seen.get("status") == want

    assert wait_for(check, timeout, 0.2), (want, seen)
    return seen


def offered_booking(c: httpx.Client, city: Pipeline, place: Place, auth: dict[str, str]) -> tuple[str, str, dict]:
    """A driver online near ``place`` and a booking there, once it is offered to that driver."""
    drv, _ = driver_online(c, city, place, 100)
    bid = book(c, auth, place).json()["booking_id"]
    offered = until_status(c, auth, bid, "offered", 20)
    assert offered["driver_id"] == drv
    return drv, bid, offered


def test_booking_is_matched_accepted_and_delivered(city: Pipeline) -> None:
    place = Place()
    with httpx.Client(base_url=city.url, timeout=30) as c:
        cust = customer(c, "ada")
        driver_online(c, city, place, 1500)  # a farther one, also available
        near, near_auth = driver_online(c, city, place, 200)

        r = book(c, cust, place)
        assert r.status_code == 201, r.text
        booking = r.json()
        assert booking["status"] == "requested" and booking["notes"] == "ring twice"
        bid = booking["booking_id"]

        offered = until_status(c, cust, bid, "offered")
        assert offered["driver_id"] == near and offered["eta_s"] > 0  # the nearer driver by ETA
        assert not in_geo_index(city.settings, near)  # reserved: out of the available index
        # The driver sees the offer; the other driver does not see the booking at all.
        assert c.get(f"/v1/bookings/{bid}", headers=near_auth).status_code == 200
        mine = c.get("/v1/bookings", headers=near_auth)
        assert mine.status_code == 200

        assert c.post(f"/v1/bookings/{bid}/accept", headers=near_auth).json()["status"] == "assigned"
        conflict = c.post(f"/v1/bookings/{bid}/delivered", json={"proof": "sig"}, headers=near_auth)
        assert conflict.status_code == 409
        assert conflict.json() == {"detail": "cannot mark delivery on a booking that is assigned", "status": "assigned"}
        assert c.post(f"/v1/bookings/{bid}/arrived", headers=near_auth).json()["status"] == "driver_arrived"
        assert c.post(f"/v1/bookings/{bid}/picked-up", headers=near_auth).json()["status"] == "picked_up"
        assert c.post(f"/v1/bookings/{bid}/cancel", headers=cust).status_code == 409  # too late to cancel
        done = c.post(f"/v1/bookings/{bid}/delivered", json={"proof": "signed by J."}, headers=near_auth)
        assert done.status_code == 200 and done.json()["status"] == "delivered"
        assert wait_for(lambda: in_geo_index(city.settings, near), 10, 0.2)  # free again

        # MongoDB keeps the booking and every transition, once each.
        def history() -> list[str]:
            page = c.get("/v1/bookings", params={"status": "delivered"}, headers=cust).json()["items"]
            return [b["booking_id"] for b in page]

        assert wait_for(lambda: bid in history(), 30, 0.5)
        events = asyncio.run(_events(city.settings, bid))
        story = ["booking.requested", "booking.offered", "booking.assigned", "booking.driver_arrived",
                 "booking.picked_up", "booking.delivered"]  # fmt: skip
        assert [e["type"] for e in events] == story
        # The same timeline through the API, for its customer and driver; nobody else sees it.
        timeline = c.get(f"/v1/bookings/{bid}/events", headers=cust)
        assert timeline.status_code == 200, timeline.text
        assert [e["type"] for e in timeline.json()] == story
        assert [e["version"] for e in timeline.json()] == sorted(e["version"] for e in timeline.json())
        assert timeline.json()[1]["driver_id"] == near and timeline.json()[-1]["status"] == "delivered"
        assert c.get(f"/v1/bookings/{bid}/events", headers=near_auth).status_code == 200
        stranger = customer(c, "eve")
        assert c.get(f"/v1/bookings/{bid}/events", headers=stranger).status_code == 404


async def _events(settings: Settings, bid: str) -> list[dict[str, Any]]:
    from motor.motor_asyncio import AsyncIOMotorClient

    client: AsyncIOMotorClient = AsyncIOMotorClient(settings.mongo_dsn)
    try:
        deadline = time.monotonic() + 30
        while True:
            docs = await client[settings.mongo_db].booking_events.find({"booking_id": bid}).to_list(None)
            if len(docs) >= 6 or time.monotonic() > deadline:
                return sorted(docs, key=lambda d: d["version"])
            await asyncio.sleep(0.5)
    finally:
        client.close()


def test_idempotency_key_and_tenant_isolation(city: Pipeline) -> None:
    place = Place()
    with httpx.Client(base_url=city.url, timeout=30) as c:
        ada, bob = customer(c, "ada"), customer(c, "bob")
        first = book(c, ada, place, key="order-42")
        again = book(c, ada, place, key="order-42")
        assert first.status_code == 201 and again.status_code == 200
        assert first.json()["booking_id"] == again.json()["booking_id"]
        other = c.post("/v1/bookings", json={"pickup": place.at(), "dropoff": place.at(10)},
                       headers={**ada, "Idempotency-Key": "order-42"})  # fmt: skip
        assert other.status_code == 422 and "different request" in other.text
        # Bob's same key is his own booking, not Ada's.
        bobs = book(c, bob, place, key="order-42")
        assert bobs.status_code == 201 and bobs.json()["booking_id"] != first.json()["booking_id"]

        bid = first.json()["booking_id"]
        for method, path in (("GET", f"/v1/bookings/{bid}"), ("POST", f"/v1/bookings/{bid}/cancel")):
            r = c.request(method, path, headers=bob)
            assert r.status_code == 404 and r.json()["detail"] == "no such booking"
        assert bid not in [b["booking_id"] for b in c.get("/v1/bookings", headers=bob).json()["items"]]
        _, stranger = driver_online(c, city, Place(), 0)
        assert c.post(f"/v1/bookings/{bid}/accept", headers=stranger).status_code == 404
        assert c.post(f"/v1/bookings/{bid}/accept", headers=ada).status_code == 403
        assert c.post("/v1/bookings", json={"pickup": place.at(), "dropoff": place.at(1)},
                      headers=stranger).status_code == 403  # fmt: skip
        assert c.post("/v1/bookings", json={"pickup": {"lat": 91, "lon": 0}, "dropoff": place.at()},
                      headers=ada).status_code == 422  # fmt: skip
        cancelled = c.post(f"/v1/bookings/{bid}/cancel", json={"reason": "changed my mind"}, headers=ada)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert c.post(f"/v1/bookings/{bid}/cancel", headers=ada).json()["detail"] == (
            "cannot cancel a booking that is cancelled"
        )


def test_two_bookings_never_get_the_same_driver_and_decline_redispatches(city: Pipeline) -> None:
    place = Place()
    with httpx.Client(base_url=city.url, timeout=30) as c:
        ada, bob = customer(c, "ada"), customer(c, "bob")
        only, only_auth = driver_online(c, city, place, 100)
        b1, b2 = book(c, ada, place).json()["booking_id"], book(c, bob, place).json()["booking_id"]

        def offered_to() -> list[str | None]:
            return [status_of(c, a, b).get("driver_id") for a, b in ((ada, b1), (bob, b2))]

        assert wait_for(lambda: only in offered_to(), 20, 0.2)
        time.sleep(1.0)  # several matching rounds: the second booking must still not get the same driver
        holders = offered_to()
        assert holders.count(only) == 1, holders
        held = b1 if holders[0] == only else b2
        waiting_auth, waiting = (bob, b2) if held == b1 else (ada, b1)

        # The driver declines: the booking goes back to matching and, with nobody else, expires.
        declined = c.post(f"/v1/bookings/{held}/decline", json={"reason": "too far"}, headers=only_auth)
        assert declined.status_code == 200 and declined.json()["status"] == "requested"
        # Now free, the driver is offered the other booking; a second driver takes over the declined one.
        assert wait_for(lambda: status_of(c, waiting_auth, waiting).get("driver_id") == only, 20, 0.2)
        second, _ = driver_online(c, city, place, 300)
        holder_auth = ada if held == b1 else bob
        got = until_status(c, holder_auth, held, "offered", 20)
        assert got["driver_id"] == second  # never the driver who declined


def test_offer_timeout_redispatches_and_nobody_means_expired(city: Pipeline) -> None:
    place = Place()
    with httpx.Client(base_url=city.url, timeout=30) as c:
        ada = customer(c, "ada")
        sleepy, _ = driver_online(c, city, place, 100)
        bid = book(c, ada, place).json()["booking_id"]
        assert until_status(c, ada, bid, "offered", 20)["driver_id"] == sleepy
        # Nobody accepts within 3 s; no one else is around: back to requested, then expired with a reason.
        expired = until_status(c, ada, bid, "expired", 45)
        assert expired["reason"] in ("no driver accepted in time", "no driver available within 2 km")
        assert wait_for(lambda: in_geo_index(city.settings, sleepy), 10, 0.2)  # the reservation is gone

        empty = Place()
        lonely = book(c, ada, empty).json()["booking_id"]
        assert until_status(c, ada, lonely, "expired", 45)["reason"] == "no driver available within 2 km"


def test_a_reservation_without_offer_is_released(city: Pipeline) -> None:
    """A worker that died between reserving and offering: the deadline timer frees the driver."""
    from streams.reservations import reserve

    place = Place()
    with httpx.Client(base_url=city.url, timeout=30) as c:
        ada = customer(c, "ada")
        drv, _ = driver_online(c, city, place, 100)
        bid = book(c, ada, place, key=f"k-{random.random()}").json()["booking_id"]
        assert until_status(c, ada, bid, "offered", 20)
        c.post(f"/v1/bookings/{bid}/cancel", headers=ada)
        assert wait_for(lambda: in_geo_index(city.settings, drv), 10, 0.2)

        import redis.asyncio as aioredis

        async def orphan() -> bool:
            r = aioredis.from_url(city.settings.redis_dsn, decode_responses=True)
            try:
                ghost = "00000000-0000-4000-8000-000000000001"
                return await reserve(r, ghost, drv, 60_000, time.time() + 1)
            finally:
                await r.aclose()

        assert asyncio.run(orphan())
        assert not in_geo_index(city.settings, drv)
        assert wait_for(lambda: in_geo_index(city.settings, drv), 15, 0.2)
        assert redis.Redis.from_url(city.settings.redis_dsn).get(f"reserve:driver:{drv}") is None


async def _collect(url: str, token: str, until: str | None, after: str | None = None, timeout: float = 30,
                   ready: asyncio.Event | None = None) -> list[dict[str, Any]]:  # fmt: skip
    import websockets

    ws_url = url.replace("http", "ws") + f"/v1/notifications?token={token}" + (f"&after={after}" if after else "")
    got: list[dict[str, Any]] = []
    async with websockets.connect(ws_url) as ws:
        if ready is not None:
            ready.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                break
            if msg["type"] in ("heartbeat", "subscribed"):
                continue
            got.append(msg)
            if until is not None and msg["type"] == until:
                break
    return got


def test_an_offer_timeout_lost_with_a_dead_worker_is_sent_again(city: Pipeline) -> None:
    """The expired offer was claimed by a worker that died before its timeout command left.

    The claim is a lease: after it the offer is claimed again and timed out, so the booking
    is not stuck "offered" and its driver not stuck reserved.
    """
    from schemas.contracts import DEADLINES_KEY
    from streams.reservations import claim_expired

    place = Place()
    with httpx.Client(base_url=city.url, timeout=30) as c:
        ada = customer(c, "ada")
        drv, bid, offered = offered_booking(c, city, place, ada)
        deadline = datetime.fromisoformat(offered["offer_deadline"]).timestamp()

        import redis.asyncio as aioredis

        async def claim_and_die() -> list[tuple[str, str]]:
            r = aioredis.from_url(city.settings.redis_dsn, decode_responses=True)
            try:  # what the dying worker's timer did, just before the deadline reached the live one's
                return await claim_expired(r, deadline + 0.01, CLAIM_LEASE_S)
            finally:
                await r.aclose()

        assert (bid, drv) in asyncio.run(claim_and_die())
        assert status_of(c, ada, bid)["status"] == "offered"
        # Timed out once the lease lapsed: the driver is free and remembered as having let it pass.
        assert wait_for(lambda: status_of(c, ada, bid)["status"] != "offered", CLAIM_LEASE_S + 15, 0.2)
        assert wait_for(lambda: in_geo_index(city.settings, drv), 10, 0.2)
        r = redis.Redis.from_url(city.settings.redis_dsn, decode_responses=True)
        assert r.zscore(DEADLINES_KEY, f"{bid}|{drv}") is None  # handled: the lease entry is gone
        mirror = orjson.loads(r.get(f"booking:{bid}") or b"{}")
        assert drv in mirror["declined_by"], mirror


def test_customer_socket_hears_the_story_in_order_and_catches_up_after_reconnect(city: Pipeline) -> None:
    place = Place()
    with httpx.Client(base_url=city.url, timeout=30) as c:
        ada, eve = customer(c, "ada"), customer(c, "eve")
        drv, drv_auth = driver_online(c, city, place, 100)
        ada_token = ada["Authorization"].removeprefix("Bearer ")
        eve_token = eve["Authorization"].removeprefix("Bearer ")

        async def story() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            ready_a, ready_e = asyncio.Event(), asyncio.Event()
            mine = asyncio.create_task(_collect(city.url, ada_token, "booking.delivered", ready=ready_a))
            other = asyncio.create_task(_collect(city.url, eve_token, None, timeout=12, ready=ready_e))
            await ready_a.wait()
            await ready_e.wait()
            await asyncio.sleep(0.5)  # the API process binds the sockets' patterns

            def act() -> None:
                bid = book(c, ada, place).json()["booking_id"]
                until_status(c, ada, bid, "offered", 20)
                for step in ("accept", "arrived", "picked-up"):
                    assert c.post(f"/v1/bookings/{bid}/{step}", headers=drv_auth).status_code == 200
                assert c.post(f"/v1/bookings/{bid}/delivered", json={"proof": "code 1234"},
                              headers=drv_auth).status_code == 200  # fmt: skip

            await asyncio.to_thread(act)
            return await mine, await other

        mine, other = asyncio.run(story())
        types = [m["type"] for m in mine]
        assert types == ["booking.requested", "booking.offered", "booking.assigned", "booking.driver_arrived",
                         "booking.picked_up", "booking.delivered"], types  # fmt: skip
        assert all(m["customer_id"] != "" for m in mine) and mine[1]["driver_id"] == drv
        ids = [m["id"] for m in mine]
        assert ids == sorted(ids, key=_sid)
        assert other == []  # another customer hears nothing of it

        # Reconnect after the second message: exactly the rest, in order, once.
        rest = asyncio.run(_collect(city.url, ada_token, "booking.delivered", after=mine[1]["id"], timeout=10))
        assert [m["id"] for m in rest] == [m["id"] for m in mine[2:]]

        async def refused(token: str, after: str | None = None) -> int | None:
            import websockets

            q = f"?token={token}" + (f"&after={after}" if after else "")
            try:
                async with websockets.connect(city.url.replace("http", "ws") + "/v1/notifications" + q) as ws:
                    await ws.recv()
            except websockets.ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
            except websockets.InvalidStatus as exc:
                return exc.response.status_code
            return None

        assert asyncio.run(refused("not-a-token")) == 4401
        assert asyncio.run(refused(ada_token, after="bogus")) == 1008


def _sid(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq)


def test_eta_falls_as_the_driver_approaches_and_the_pickup_fence_marks_arrival(city: Pipeline) -> None:
    place = Place()
    with httpx.Client(base_url=city.url, timeout=30) as c:
        ada = customer(c, "ada")
        drv, drv_auth = driver_online(c, city, place, 1500)
        token = ada["Authorization"].removeprefix("Bearer ")

        async def story() -> list[dict[str, Any]]:
            ready = asyncio.Event()
            listen = asyncio.create_task(_collect(city.url, token, "booking.driver_arrived", timeout=60, ready=ready))
            await ready.wait()
            await asyncio.sleep(0.5)

            def drive() -> None:
                bid = book(c, ada, place).json()["booking_id"]
                until_status(c, ada, bid, "offered", 20)
                assert c.post(f"/v1/bookings/{bid}/accept", headers=drv_auth).status_code == 200
                t0 = datetime.now(UTC).timestamp()  # after the first fix (older ones are out of order)
                for i in range(1, 12):  # 1,500 m → 0 m north of the pickup, 150 m per 10 s
                    ping = {"seq": 1 + i, "ts": datetime.fromtimestamp(t0 + 10 * i, UTC).isoformat(),
                            "accuracy_m": 5.0, "speed_mps": 15.0, **place.at(1500 - 150 * i)}  # fmt: skip
                    assert c.post("/v1/telemetry", json={"pings": [ping]}, headers=drv_auth).status_code == 202
                    time.sleep(0.4)

            await asyncio.to_thread(drive)
            return await listen

        got = asyncio.run(story())
        etas = [m for m in got if m["type"] == "eta.update"]
        assert len(etas) >= 4, [m["type"] for m in got]
        assert all(m["phase"] == "to_pickup" and m["driver_id"] == drv for m in etas)
        values = [m["eta_s"] for m in etas]
        assert values == sorted(values, reverse=True) and values[-1] < values[0] / 2, values
        assert [m["distance_m"] for m in etas] == sorted((m["distance_m"] for m in etas), reverse=True)
        assert got[-1]["type"] == "booking.driver_arrived"  # nobody pressed "arrived": the pickup fence did
