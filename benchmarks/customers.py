"""Customers who book and cancel while listening on their notification sockets, as the web client does.

Used by :mod:`benchmarks.chaos`: each customer books a delivery in the phone fleet's city,
cancels it a few seconds later, books again, and so on, resending a request that was not
answered (with the same ``Idempotency-Key``). Its socket reconnects with ``?after=`` the
greatest id it received whenever it closes. Afterwards :meth:`Customers.check` compares what
every socket heard with the booking events the store wrote: **missed** (stored, never
heard) and **repeated** (heard twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from api.notify import stream_id

PASSWORD = "chaos-customer-pw-1"  # accounts of this benchmark run only


@dataclass
class Customer:
    email: str
    token: str = ""
    heard: list[str] = field(default_factory=list)  # event ids of booking messages, as received
    last_id: str | None = None
    connects: int = 0
    bookings: list[str] = field(default_factory=list)


class Customers:
    def __init__(self, url: str, n: int, period_s: float = 3.0, seed: int = 7) -> None:
        self.url = url
        self.ws_url = url.replace("http", "ws", 1) + "/v1/notifications"
        self.period_s = period_s
        self.rng = random.Random(seed)
        run = uuid.uuid4().hex[:6]
        self.customers = [Customer(f"chaos-{run}-{i}@example.com") for i in range(n)]
        self.unanswered = 0  # requests resent because no answer (or a 5xx/429) came back
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def sign_up(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as c:
            for cu in self.customers:
                body = {"email": cu.email, "password": PASSWORD, "name": "chaos"}
                (await c.post("/v1/auth/register", json=body)).raise_for_status()
                login = await c.post("/v1/auth/login", json={"email": cu.email, "password": PASSWORD})
                login.raise_for_status()
                cu.token = login.json()["access_token"]

    def start(self) -> None:
        for cu in self.customers:
            self._tasks += [asyncio.create_task(self._listen(cu)), asyncio.create_task(self._book(cu))]

    async def finish(self, quiet_s: float = 5.0, timeout: float = 60.0) -> None:
        """Stops booking, then waits until no socket has heard anything for ``quiet_s``."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        total = -1
        while time.monotonic() < deadline:
            now = sum(len(cu.heard) for cu in self.customers)
            if now == total:
                break
            total = now
            await asyncio.sleep(quiet_s)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _listen(self, cu: Customer) -> None:
        import websockets

        while True:
            q = f"?token={cu.token}" + (f"&after={cu.last_id}" if cu.last_id else "")
            try:
                async with websockets.connect(self.ws_url + q, open_timeout=10) as ws:
                    cu.connects += 1
                    async for raw in ws:
                        msg = orjson.loads(raw)
                        if str(msg.get("type", "")).startswith("booking."):
                            cu.heard.append(str(msg["event_id"]))
                        # The greatest id (a late message may come after a greater one); the
                        # first message, "subscribed", has one too.
                        if msg.get("id"):
                            sid = str(msg["id"])
                            cu.last_id = sid if cu.last_id is None else max(sid, cu.last_id, key=stream_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # closed (a replica or a server away, 1012/1013): reconnect with after=
                pass
            await asyncio.sleep(0.5)

    async def _send(self, c: httpx.AsyncClient, path: str, headers: dict[str, str], ok: set[int],
                    body: dict[str, Any] | None = None) -> httpx.Response | None:  # fmt: skip
        """Resends until an answer in ``ok`` (as a phone app would), or None once the run stops."""
        while True:
            try:
                r = await c.post(path, json=body, headers=headers)
                if r.status_code in ok:
                    return r
            except httpx.HTTPError:
                pass
            self.unanswered += 1
            if self.stop.is_set():
                return None
            await asyncio.sleep(0.5)

    async def _book(self, cu: Customer) -> None:
        auth = {"Authorization": f"Bearer {cu.token}"}
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as c:
            await asyncio.sleep(self.rng.uniform(0, self.period_s))
            while not self.stop.is_set():
                lat, lon = 52.46 + self.rng.uniform(0, 0.11), 13.31 + self.rng.uniform(0, 0.17)
                body = {"pickup": {"lat": lat, "lon": lon}, "dropoff": {"lat": lat + 0.01, "lon": lon}}
                key = {"Idempotency-Key": uuid.uuid4().hex}
                made = await self._send(c, "/v1/bookings", {**auth, **key}, {200, 201, 202}, body)
                if made is None:
                    return
                bid = made.json()["booking_id"]
                cu.bookings.append(bid)
                await asyncio.sleep(self.period_s)
                # 404 while the booking agent has not decided the request yet; 409: already final.
                with contextlib.suppress(Exception):
                    await self._send(c, f"/v1/bookings/{bid}/cancel", auth, {200, 202, 409})
                await asyncio.sleep(self.period_s)

    async def check(self, mongo_dsn: str, db: str) -> dict[str, Any]:
        """Every booking event stored for these customers heard once on their socket."""
        from motor.motor_asyncio import AsyncIOMotorClient

        mongo: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(mongo_dsn)
        try:
            missed = repeated = stored = 0
            example: dict[str, Any] = {}
            for cu in self.customers:
                # On the shard key (booking_id), as every query of the platform.
                want: dict[str, str] = {}
                cursor = mongo[db].booking_events.find({"booking_id": {"$in": cu.bookings}}, {"_id": 1, "type": 1})
                async for doc in cursor:
                    want[str(doc["_id"])] = str(doc["type"])
                stored += len(want)
                gone = set(want) - set(cu.heard)
                missed += len(gone)
                repeated += len(cu.heard) - len(set(cu.heard))
                if gone and "missed" not in example:
                    example["missed"] = {cu.email: sorted(want[e] for e in gone)}
            return {
                "customers": len(self.customers),
                "bookings": sum(len(cu.bookings) for cu in self.customers),
                "events_stored": stored,
                "events_heard": sum(len(cu.heard) for cu in self.customers),
                "missed": missed,
                "repeated": repeated,
                "reconnects": sum(max(0, cu.connects - 1) for cu in self.customers),
                "requests_resent": self.unanswered,
                "examples": example,
            }
        finally:
            mongo.close()
