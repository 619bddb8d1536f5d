"""The demo's world: drivers driving the synthetic city, customers booking, all through the real API.

Each simulated driver is a device: it posts its pings over HTTP with its own device token
and hears its offers on ``WS /v1/notifications``; it accepts most after a human-like
delay (declines some), drives the road graph to the pickup (the platform's pickup fence
marks its arrival), loads, drives to the dropoff and marks the delivery. Customers book
at ``bookings_per_min`` and watch their own sockets, where the ETA updates arrive; the
simulator records what each update predicted and when the driver really arrived, so the
ETA error is measured, not assumed. A dispatcher's socket counts bookings by state.

``pace`` > 1 runs the world faster than the clock (for a short bounded demo, so that a
minute shows whole deliveries): vehicles drive ``pace`` simulated seconds per second and
their pings carry simulated time, which starts ``(pace - 1) x duration`` in the past and
reaches the present at the end, so no device clock is ever ahead of the API's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import websockets
from prometheus_client.parser import text_string_to_metric_families

from core.config import Settings
from fleetstream.city import CENTRE, M_PER_DEG_LAT, City, Vehicle
from streams.speeds import travel_s  # the platform's formula, with nothing learned, as the baseline

PROOF = "signed by the recipient"


@dataclass
class Stats:
    """What the live view shows; every figure is counted from what the platform answered."""

    started: float = field(default_factory=time.monotonic)
    pings_posted: int = 0
    pings_accepted: int = 0
    http_errors: Counter[str] = field(default_factory=Counter)
    pings_processed: float = 0.0
    processed_rate: float = 0.0
    posted_rate: float = 0.0
    lag_records: float = 0.0
    bookings_created: int = 0
    status: dict[str, str] = field(default_factory=dict)  # booking id → latest status (dispatcher socket)
    versions: dict[str, int] = field(default_factory=dict)
    assigned: dict[str, float | None] = field(default_factory=dict)  # booking → pickup ETA at assignment
    ours: set[str] = field(default_factory=set)  # bookings this run created (the topics may carry others')
    eta_errors: list[float] = field(default_factory=list)  # |predicted arrival - actual|, seconds
    constant_errors: list[float] = field(default_factory=list)
    sockets: int = 0
    sockets_peak: int = 0
    offers: int = 0
    declined: int = 0

    def by_state(self) -> Counter[str]:
        return Counter(v for k, v in self.status.items() if k in self.ours)

    def pickup_etas(self) -> list[float]:
        return [v for k, v in self.assigned.items() if k in self.ours and v is not None]


@dataclass
class Account:
    email: str
    token: str
    subject: str


class Simulation:
    def __init__(self, settings: Settings, url: str, drivers: int, bookings_per_min: float, pace: float = 1.0,
                 seed: int = 7, post_every_s: float = 2.0, duration: float | None = None) -> None:  # fmt: skip
        self.s = settings
        self.url = url
        self.ws_url = url.replace("http", "ws", 1)
        self.city = City.load()
        self.rng = random.Random(seed)
        self.n_drivers = drivers
        self.bookings_per_min = bookings_per_min
        self.pace = pace
        self.post_every_s = post_every_s
        self.run_id = uuid.uuid4().hex[:6]
        self.stats = Stats()
        self.password = uuid.uuid4().hex  # this run's demo accounts; printed, never stored
        self.dispatcher: Account | None = None
        self.human_driver = ""
        self.customers: list[Account] = []
        self.device_tokens: dict[str, str] = {}
        self.offers: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.watch: dict[str, dict[str, Any]] = {}  # booking → predictions and pickup point (customer sockets)
        self.behind_s = (pace - 1) * duration if duration else 0.0
        self.restart_clock()
        self._stop = asyncio.Event()

    # --- clocks
    def restart_clock(self) -> None:
        self.t0_wall = datetime.now(UTC) - timedelta(seconds=self.behind_s)
        self.t0 = time.monotonic()

    def sim_now(self) -> float:
        """Simulated seconds since start."""
        return (time.monotonic() - self.t0) * self.pace

    def sim_time(self) -> datetime:
        return self.t0_wall + timedelta(seconds=self.sim_now())

    async def sleep_sim(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.pace)

    # --- set-up
    async def setup(self, c: httpx.AsyncClient, admin: dict[str, str]) -> None:
        ids = [f"sim-{self.run_id}-{i:03d}" for i in range(self.n_drivers)]  # a new fleet per run

        async def device(d: str) -> None:
            r = await c.post(f"/v1/drivers/{d}/devices", headers=admin)
            r.raise_for_status()
            self.device_tokens[d] = r.json()["token"]

        for start in range(0, len(ids), 50):
            await asyncio.gather(*(device(d) for d in ids[start : start + 50]))
        r = await c.post("/v1/users", headers=admin, json={"email": f"dispatcher.{self.run_id}@example.com",
                         "password": self.password, "name": "Demo dispatcher", "role": "dispatcher"})  # fmt: skip
        r.raise_for_status()
        self.dispatcher = await self.login(c, f"dispatcher.{self.run_id}@example.com")
        # A driver for a person to play on the web UI's driver page (the simulated ones use device tokens).
        self.human_driver = f"driver.{self.run_id}@example.com"
        r = await c.post("/v1/users", headers=admin, json={"email": self.human_driver, "password": self.password,
                         "name": "You, driving", "role": "driver"})  # fmt: skip
        r.raise_for_status()
        for i in range(6):
            email = f"customer{i}.{self.run_id}@example.com"
            r = await c.post("/v1/auth/register", json={"email": email, "password": self.password,
                                                         "name": f"Demo customer {i}"})  # fmt: skip
            r.raise_for_status()
            self.customers.append(await self.login(c, email))
        await self.ensure_zones(c, admin)

    async def login(self, c: httpx.AsyncClient, email: str) -> Account:
        r = await c.post("/v1/auth/login", json={"email": email, "password": self.password})
        r.raise_for_status()
        token = r.json()["access_token"]
        me = (await c.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})).json()
        return Account(email, token, me["id"])

    async def ensure_zones(self, c: httpx.AsyncClient, admin: dict[str, str]) -> None:
        have = {z["name"] for z in (await c.get("/v1/zones", headers=admin)).json()}
        lat, lon = CENTRE
        d = 1_200 / M_PER_DEG_LAT
        dl = d / math.cos(math.radians(lat))
        zones: list[dict[str, Any]] = [
            {"name": "City centre", "tags": ["congestion"], "circle": {"center": {"lat": lat, "lon": lon},
                                                                       "radius_m": 2500}},
            {"name": "North depot", "tags": ["depot"], "polygon": [
                {"lat": lat + 4 * d, "lon": lon - dl}, {"lat": lat + 4 * d, "lon": lon + dl},
                {"lat": lat + 5 * d, "lon": lon + dl}, {"lat": lat + 5 * d, "lon": lon - dl}]},
            {"name": "Airport", "tags": ["airport"], "circle": {"center": {"lat": lat - 4 * d, "lon": lon + 4 * dl},
                                                               "radius_m": 800}},
        ]  # fmt: skip
        for z in zones:
            if z["name"] not in have:
                (await c.post("/v1/zones", headers=admin, json=z)).raise_for_status()

    # --- the world
    async def run(self, c: httpx.AsyncClient, seconds: float | None) -> None:
        self.restart_clock()
        self.stats.started = time.monotonic()
        tasks = [asyncio.create_task(self.driver(c, d, tok)) for d, tok in self.device_tokens.items()]
        tasks += [asyncio.create_task(self.listen(a, self.on_customer_event)) for a in self.customers]
        assert self.dispatcher is not None
        tasks.append(asyncio.create_task(self.listen(self.dispatcher, self.on_staff_event)))
        tasks.append(asyncio.create_task(self.book(c)))
        tasks.append(asyncio.create_task(self.scrape(c)))
        try:
            if seconds is None:
                await self._stop.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), seconds)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    async def driver(self, c: httpx.AsyncClient, driver_id: str, token: str) -> None:
        """The phone: a fix every second, posted every ``post_every_s``; the person runs alongside."""
        auth = {"Authorization": f"Bearer {token}"}
        v = Vehicle(self.city, self.rng.randrange(len(self.city.nodes)), self.rng.uniform(0.85, 1.05))
        v.go(self.city.random_node(self.rng))
        offers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        busy, there = asyncio.Event(), asyncio.Event()
        helpers = [asyncio.create_task(self.listen_as_driver(token, offers)),
                   asyncio.create_task(self.person(c, auth, v, offers, busy, there))]  # fmt: skip
        buffer: list[dict[str, Any]] = []
        seq = 0
        await asyncio.sleep(self.rng.uniform(0, self.post_every_s))  # spread the posts
        last_post = time.monotonic()
        try:
            while True:
                await asyncio.sleep(1.0)
                if v.step(self.pace):
                    there.set()
                lat, lon = v.position
                buffer.append({"seq": seq, "ts": self.sim_time().isoformat(), "lat": round(lat, 6),
                               "lon": round(lon, 6), "accuracy_m": 5.0, "speed_mps": round(v.speed_mps, 2),
                               "heading_deg": round(v.heading_deg, 1) % 360.0})  # fmt: skip
                seq += 1
                if time.monotonic() - last_post >= self.post_every_s:
                    last_post = time.monotonic()
                    buffer = await self.post(c, auth, buffer)
                if not busy.is_set() and not v.moving:
                    v.go(self.city.random_node(self.rng))  # cruising while free
        finally:
            for t in helpers:
                t.cancel()

    async def person(self, c: httpx.AsyncClient, auth: dict[str, str], v: Vehicle,
                     offers: asyncio.Queue[dict[str, Any]], busy: asyncio.Event,
                     there: asyncio.Event) -> None:  # fmt: skip
        """Reads an offer for a few seconds, usually accepts, drives, loads, delivers."""
        while True:
            offer = await offers.get()
            self.stats.offers += 1
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))
            bid = offer["booking_id"]
            if self.rng.random() < 0.12:
                self.stats.declined += 1
                await self.act(c, auth, bid, "decline", json={"reason": "too far"})
                continue
            if not await self.act(c, auth, bid, "accept"):
                continue
            busy.set()
            try:
                booking = (await c.get(f"/v1/bookings/{bid}", headers=auth)).json()
                await self.drive(v, there, booking["pickup"])
                await self.sleep_sim(self.rng.uniform(20, 60))  # ringing the bell, loading
                if not await self.act(c, auth, bid, "picked-up", tries=10):
                    continue
                await self.drive(v, there, booking["dropoff"])
                await self.sleep_sim(self.rng.uniform(10, 30))
                await self.act(c, auth, bid, "delivered", json={"proof": PROOF})
            finally:
                busy.clear()

    async def drive(self, v: Vehicle, there: asyncio.Event, point: dict[str, float]) -> None:
        there.clear()
        v.go(self.city.nearest(point["lat"], point["lon"]))
        if v.moving:
            await there.wait()

    async def act(self, c: httpx.AsyncClient, auth: dict[str, str], bid: str, action: str, tries: int = 1,
                  json: dict[str, Any] | None = None) -> bool:  # fmt: skip
        for attempt in range(tries):
            try:
                r = await c.post(f"/v1/bookings/{bid}/{action}", headers=auth, json=json)
            except httpx.HTTPError as exc:
                self.stats.http_errors[type(exc).__name__] += 1
                continue
            if r.status_code == 200:
                return True
            if r.status_code == 409 and action == "picked-up" and r.json().get("status") == "assigned":
                if attempt >= 3:  # the fence has not seen us yet; say it ourselves
                    await c.post(f"/v1/bookings/{bid}/arrived", headers=auth)
                await asyncio.sleep(1.0)
                continue
            self.stats.http_errors[f"{action} {r.status_code}"] += 1
            return False
        return False

    async def post(self, c: httpx.AsyncClient, auth: dict[str, str], pings: list[dict[str, Any]]) -> list[Any]:
        """Post a batch; what was not accepted for a transient reason stays for the next post."""
        if not pings:
            return pings
        try:
            r = await c.post("/v1/telemetry", json={"pings": pings}, headers=auth)
        except httpx.HTTPError as exc:
            self.stats.http_errors[type(exc).__name__] += 1
            return pings[-300:]
        if r.status_code in (429, 503):
            self.stats.http_errors[str(r.status_code)] += 1
            return pings[-300:]
        self.stats.pings_posted += len(pings)
        if r.status_code in (202, 422):
            accepted = r.json().get("accepted", 0)
            self.stats.pings_accepted += accepted
            if accepted < len(pings):  # the simulator sent something a device must not: say what
                self.stats.http_errors[f"422 {str(r.json().get('detail'))[:120]}"] += 1
        else:
            self.stats.http_errors[str(r.status_code)] += 1
        return []

    async def book(self, c: httpx.AsyncClient) -> None:
        """Customers book at ``bookings_per_min``: pickups mostly central, deliveries across town."""
        while True:
            await asyncio.sleep(self.rng.expovariate(self.bookings_per_min / 60) / self.pace)
            customer = self.rng.choice(self.customers)
            pickup = self.city.random_node(self.rng, central=0.6)
            plat, plon = self.city.nodes[pickup]
            dropoff = self.city.nearest(plat + self.rng.gauss(0, 1_500) / M_PER_DEG_LAT,
                                        plon + self.rng.gauss(0, 2_500) / M_PER_DEG_LAT)  # fmt: skip
            dlat, dlon = self.city.nodes[dropoff]
            body = {"pickup": {"lat": plat, "lon": plon}, "dropoff": {"lat": dlat, "lon": dlon},
                    "parcel_size": self.rng.choice(["small", "medium", "large"])}  # fmt: skip
            headers = {"Authorization": f"Bearer {customer.token}", "Idempotency-Key": uuid.uuid4().hex}
            try:
                r = await c.post("/v1/bookings", json=body, headers=headers)
            except httpx.HTTPError as exc:
                self.stats.http_errors[type(exc).__name__] += 1
                continue
            if r.status_code in (200, 201, 202):
                self.stats.bookings_created += 1
                self.stats.ours.add(r.json()["booking_id"])
                self.watch[r.json()["booking_id"]] = {"pickup": (plat, plon), "predictions": []}
            else:
                self.stats.http_errors[f"book {r.status_code}"] += 1

    # --- sockets
    async def listen(self, account: Account, handle: Any) -> None:
        await self._listen(account.token, handle)

    async def listen_as_driver(self, token: str, offers: asyncio.Queue[dict[str, Any]]) -> None:
        async def handle(msg: dict[str, Any]) -> None:
            if msg.get("type") == "booking.offered":
                await offers.put(msg)

        await self._listen(token, handle)

    async def _listen(self, token: str, handle: Any) -> None:
        """One socket, reconnecting with the last id seen so nothing is missed."""
        last: str | None = None
        while True:
            q = f"?token={token}" + (f"&after={last}" if last else "")
            try:
                async with websockets.connect(f"{self.ws_url}/v1/notifications{q}", max_size=2**20) as ws:
                    self.stats.sockets += 1
                    self.stats.sockets_peak = max(self.stats.sockets_peak, self.stats.sockets)
                    try:
                        async for raw in ws:
                            msg = orjson.loads(raw)
                            last = msg.get("id", last)
                            await handle(msg)
                    finally:
                        self.stats.sockets -= 1
            except (OSError, websockets.WebSocketException):
                await asyncio.sleep(1.0)

    async def on_customer_event(self, msg: dict[str, Any]) -> None:
        bid = msg.get("booking_id")
        w = self.watch.get(bid or "")
        if w is None:
            return
        now = self.sim_now()
        if msg.get("type") == "eta.update" and msg.get("phase") == "to_pickup":
            constant = None
            if msg.get("lat") is not None:
                constant = travel_s(msg["lat"], msg["lon"], w["pickup"][0], w["pickup"][1], {}, 0, self.s)
            w["predictions"].append((now, float(msg["eta_s"]), constant))
        elif msg.get("type") == "booking.driver_arrived":
            for at, eta, constant in w.pop("predictions", []):
                self.stats.eta_errors.append(abs(at + eta - now))
                if constant is not None:
                    self.stats.constant_errors.append(abs(at + constant - now))

    async def on_staff_event(self, msg: dict[str, Any]) -> None:
        bid, version = msg.get("booking_id"), msg.get("version")
        if not bid or not isinstance(version, int) or version <= self.stats.versions.get(bid, -1):
            return
        self.stats.versions[bid] = version
        self.stats.status[bid] = msg["status"]
        if msg.get("type") == "booking.assigned":
            self.stats.assigned[bid] = float(msg["eta_s"]) if msg.get("eta_s") is not None else None

    async def scrape(self, c: httpx.AsyncClient) -> None:
        """Pings processed and consumer lag, from the worker's own /metrics."""
        url = f"http://{self.s.host}:{self.s.worker_web_port}/metrics"
        prev: tuple[float, float, int] | None = None
        base: float | None = None  # the worker may have processed others' pings before this run
        while True:
            await asyncio.sleep(2.0)
            try:
                text = (await c.get(url, timeout=5)).text
            except httpx.HTTPError:
                continue
            processed, lag = 0.0, 0.0
            for fam in text_string_to_metric_families(text):
                for smp in fam.samples:
                    if smp.name == "fleetstream_agent_pings_total" and smp.labels.get("agent") == "clean":
                        processed += smp.value
                    elif smp.name == "fleetstream_consumer_lag" and smp.labels.get("topic", "").endswith("raw"):
                        lag += smp.value
            now = time.monotonic()
            base = processed if base is None else base
            if prev is not None:
                dt = max(now - prev[0], 1e-6)
                self.stats.processed_rate = (processed - prev[1]) / dt
                self.stats.posted_rate = (self.stats.pings_posted - prev[2]) / dt
            prev = (now, processed, self.stats.pings_posted)
            self.stats.pings_processed, self.stats.lag_records = processed - base, lag


def summary(st: Stats) -> dict[str, Any]:
    states = st.by_state()
    etas = st.pickup_etas()
    return {
        "seconds": round(time.monotonic() - st.started, 1),
        "pings_posted": st.pings_posted,
        "pings_accepted": st.pings_accepted,
        "pings_processed": int(st.pings_processed),
        "processed_per_s": round(st.processed_rate),
        "lag_records": int(st.lag_records),
        "bookings_created": st.bookings_created,
        "bookings_by_state": dict(states),
        "matched": sum(1 for b in st.assigned if b in st.ours),
        "delivered": states.get("delivered", 0),
        "offers": st.offers,
        "declined": st.declined,
        "mean_pickup_eta_s": round(statistics.fmean(etas), 1) if etas else None,
        "eta_mae_s": round(statistics.fmean(st.eta_errors), 1) if st.eta_errors else None,
        "constant_speed_eta_mae_s": round(statistics.fmean(st.constant_errors), 1) if st.constant_errors else None,
        "eta_predictions_checked": len(st.eta_errors),
        "sockets": st.sockets,
        "sockets_peak": st.sockets_peak,
        "http_errors": dict(st.http_errors),
    }
