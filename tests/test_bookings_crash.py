"""Crash and replay paths of the booking worker, on the real stack: a worker killed mid-matching,
a repeated offer. Each test runs its own worker and API.

In a module of its own: the module fixture of ``test_bookings`` runs a second deployment
(another consumer group on the same topics, the same Redis keys). Both would own these
bookings' state, and the restarted worker's replay could overwrite what the other one
already moved on ("offered" with no offer deadline left: stuck). One deployment per
namespace is the rule in production too (ARCHITECTURE.md).
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis

from core.config import Settings
from tests.conftest import Pipeline, bearer, wait_for
from tests.test_bookings import (
    Place,
    book,
    customer,
    driver_online,
    in_geo_index,
    offered_booking,
    status_of,
    until_status,
)

pytestmark = pytest.mark.usefixtures("stack")


@contextmanager
def deployment(stack: Settings, tmp_path: Path, name: str, **env: str) -> Iterator[Pipeline]:
    """This test's own worker and API (a fresh consumer group), stopped when it ends."""
    yield from Pipeline(stack, tmp_path, f"{name}-{random.randrange(1 << 30)}", FLEETSTREAM_DEVICE_TOKEN_CACHE_S="0",
                        FLEETSTREAM_MATCH_WINDOW_S="0.3", FLEETSTREAM_LOGIN_MAX_ATTEMPTS_PER_ADDRESS="100000",
                        **env).running()  # fmt: skip


def test_a_worker_killed_mid_matching_leaves_no_driver_reserved(stack: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL while rounds reserve and offer: after a restart every booking settles and every driver is free."""
    with deployment(stack, tmp_path, "test-kill-match", FLEETSTREAM_OFFER_TIMEOUT_S="3",
                    FLEETSTREAM_MATCH_TIMEOUT_S="12", FLEETSTREAM_MATCH_RADII_M="[2000]",
                    FLEETSTREAM_BOOKING_REPLY_TIMEOUT_S="10", FLEETSTREAM_OFFLINE_AFTER_S="600") as p:  # fmt: skip
        place = Place()
        with httpx.Client(base_url=p.url, timeout=30) as c:
            ada = customer(c, "ada")
            drivers = [driver_online(c, p, place, 100 * i)[0] for i in range(6)]
            bookings = [book(c, ada, place).json()["booking_id"] for _ in range(8)]
            # Kill as soon as the first offers exist: rounds are reserving and offering right now.
            assert wait_for(lambda: any(status_of(c, ada, b)["status"] == "offered" for b in bookings), 20, 0.05)
            assert p.worker is not None
            p.worker.popen.send_signal(signal.SIGKILL)
            p.worker.popen.wait(10)
            r = redis.Redis.from_url(stack.redis_dsn, decode_responses=True)
            held = [d for d in drivers if r.get(f"reserve:driver:{d}")]
            assert held, "nobody was reserved at the kill; the test proves nothing"
            p.start_worker()
            # Nobody accepts: every booking ends expired (12 s after it was made, once its
            # current offer has timed out), and every driver is free again.
            for b in bookings:
                until_status(c, ada, b, "expired", 60)
            assert wait_for(lambda: not any(r.get(f"reserve:driver:{d}") for d in drivers), 60, 0.5), [
                (d, r.get(f"reserve:driver:{d}")) for d in drivers
            ]
            # Their phones keep reporting: each fix puts a driver whose hold lapsed back among the available.
            for d in drivers:
                token = bearer(p.device_token(d))
                ping = {"seq": 2, "ts": datetime.now(UTC).isoformat(), "accuracy_m": 5.0, **place.at(0)}
                assert c.post("/v1/telemetry", json={"pings": [ping]}, headers=token).status_code == 202
            stranded = lambda: [d for d in drivers if not in_geo_index(stack, d)]  # noqa: E731
            assert wait_for(lambda: not stranded(), 20, 0.2), stranded()


def test_a_repeated_offer_of_the_same_driver_keeps_the_live_offer(stack: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A second ``booking.offer`` for the driver the booking is already offered to (a replay after a
    crash, or two matchers racing) is rejected, and must not free that driver or drop the offer's
    deadline: the booking would stay "offered" with nobody to time it out."""
    import asyncio

    import orjson

    from core.kafka import make_producer
    from schemas import BookingCommand, encode
    from schemas.contracts import DEADLINES_KEY

    with deployment(stack, tmp_path, "test-reoffer", FLEETSTREAM_OFFER_TIMEOUT_S="60") as p:
        place = Place()
        with httpx.Client(base_url=p.url, timeout=30) as c:
            ada = customer(c, "ada")
            drv, bid, _ = offered_booking(c, p, place, ada)
            again = BookingCommand(type="booking.offer", booking_id=bid, actor_id="matching", actor_role="system",
                                   driver_id=drv, offer_deadline=datetime.now(UTC), eta_s=1.0)  # fmt: skip

            async def send() -> None:
                producer = make_producer(stack)
                await producer.start()
                try:
                    await producer.send_and_wait(stack.topic("bookings.commands"), encode(again), key=bid.encode())
                finally:
                    await producer.stop()

            asyncio.run(send())
            r = redis.Redis.from_url(stack.redis_dsn, decode_responses=True)
            assert wait_for(lambda: r.exists(f"reply:{again.event_id}"), 20, 0.1), "the agent never answered"
            reply = orjson.loads(r.lindex(f"reply:{again.event_id}", 0) or "{}")
            assert reply["ok"] is False and "offered" in reply["error"], reply
            assert r.get(f"reserve:driver:{drv}") == bid  # still held for the live offer
            assert r.zscore(DEADLINES_KEY, f"{bid}|{drv}") is not None  # and still timed
            assert status_of(c, ada, bid)["status"] == "offered"
            assert not in_geo_index(stack, drv)
