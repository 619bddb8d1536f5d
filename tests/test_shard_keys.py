"""What the code sends MongoDB names each sharded collection's shard key (``schemas.contracts.COLLECTIONS``).

pymongo's command monitoring records every command the API (in this process, on the stack's
FerretDB, Kafka and Redis) and the store's sinks send while they serve the routes and write
history, state, fences and bookings. Then: every collection touched is declared; every read
of a sharded one names its shard key or is one of its declared broadcast shapes (each of
which occurs); every update and upsert names the whole key; every inserted document has it.
The init job of ``deploy/k8s/mongodb.yaml`` shards exactly the declared collections.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import monitoring

from core.config import Settings
from schemas.contracts import COLLECTIONS, Collection
from tests.conftest import bearer, register_and_login

ROOT = Path(__file__).resolve().parent.parent
BY_NAME = {c.name: c for c in COLLECTIONS}
#: Where each command keeps the filter(s) and documents that mongos routes by.
READS = {"find": "filter", "count": "query", "findAndModify": "query", "distinct": "query"}


class Recorder(monitoring.CommandListener):
    """Every command sent to one database, as (command, collection, the command document)."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.db and isinstance(event.command.get(event.command_name), str):
            self.seen.append((event.command_name, event.command[event.command_name], dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _targets(coll: Collection, query: dict[str, Any], whole: bool) -> bool:
    """A read is routed by the key's first field (a hashed prefix picks its chunks); a write needs it all."""
    assert coll.shard_key is not None
    fields = [f for f, _ in coll.shard_key]
    return all(f in query for f in (fields if whole else fields[:1]))


def problems(seen: list[tuple[str, str, dict[str, Any]]]) -> tuple[list[str], set[tuple[str, frozenset[str]]]]:
    """What breaks the rules, and which broadcast shapes were used."""
    bad: list[str] = []
    broadcasts: set[tuple[str, frozenset[str]]] = set()
    for name, collection, cmd in seen:
        coll = BY_NAME.get(collection)
        if coll is None:
            bad.append(f"{name} on undeclared collection {collection!r}")
            continue
        if coll.shard_key is None or name in ("createIndexes", "listIndexes", "drop"):
            continue
        queries: list[tuple[str, dict[str, Any]]] = []
        if name in READS:
            queries.append(("read", cmd.get(READS[name]) or {}))
        elif name == "aggregate":
            first = (cmd.get("pipeline") or [{}])[0]
            queries.append(("read", first.get("$match", {})))
        elif name == "delete":
            queries += [("write", d["q"]) for d in cmd.get("deletes", [])]
        elif name == "update":
            queries += [("write", u["q"]) for u in cmd.get("updates", [])]
        elif name == "insert":
            bad += [f"insert into {collection} without its shard key: {sorted(d)}"
                    for d in cmd.get("documents", []) if not _targets(coll, d, whole=True)]  # fmt: skip
        for kind, q in queries:
            if _targets(coll, q, whole=kind == "write"):
                continue
            shape = next((b for b in coll.broadcast if set(q) <= b), None)
            if kind == "read" and shape is not None:
                broadcasts.add((collection, shape))
            else:
                bad.append(f"{name} on {collection} without its shard key: {q}")
    return bad, broadcasts


def test_the_rules_catch_what_mongos_would_broadcast() -> None:
    """The checker itself: what it must refuse, and what it lets through."""
    ok = [
        ("find", "tracks", {"find": "tracks", "filter": {"_id": "d:1"}}),
        ("update", "drivers", {"update": "drivers", "updates": [{"q": {"_id": "d"}, "u": {}, "upsert": True}]}),
        ("find", "users", {"find": "users", "filter": {"email": "a@b"}}),  # unsharded
        ("find", "bookings", {"find": "bookings", "filter": {"customer_id": "c", "status": "pending"}}),
    ]
    bad = [("find", "tracks", {"find": "tracks", "filter": {"pings": 1}}),
           ("update", "bookings", {"update": "bookings", "updates": [{"q": {"customer_id": "c"}, "u": {}}]}),
           ("insert", "geofence_events", {"insert": "geofence_events", "documents": [{"_id": 1, "zone_id": "z"}]}),
           ("delete", "geofence_events", {"delete": "geofence_events", "deletes": [{"q": {"zone_id": "z"}}]}),
           ("find", "shipments", {"find": "shipments", "filter": {}})]  # fmt: skip
    assert problems(ok) == ([], {("bookings", frozenset({"customer_id", "driver_id", "status"}))})
    assert len(problems(bad)[0]) == 5, problems(bad)


@pytest.fixture
def recorder(stack: Settings) -> Iterator[Recorder]:
    rec = Recorder(stack.mongo_db)
    monitoring.register(rec)  # clients made from now on report to it
    yield rec
    rec.db = "-"  # registered listeners stay for the process: make this one record nothing more


def _driver(uid: str) -> str:
    return f"sk-{uid}-{random.randrange(1 << 30)}"


async def test_every_query_names_the_shard_key(stack: Settings, recorder: Recorder, uid: str) -> None:
    from api.main import create_app
    from api.security import admin_token
    from schemas.bookings import BookingEvent
    from schemas.events import GeofenceEvent
    from schemas.reports import MovementEvent, Stop, Trip
    from schemas.telemetry import GpsPing
    from schemas.track import track_bucket
    from sinks.mongo import DriverStateSink, InsertOnceSink, LatestSink, TrackSink, TripDaySink
    from sinks.track_index import TrackIndexSink
    from streams.store import booking_doc, booking_event_doc, geofence_doc

    app = create_app()
    admin = bearer(admin_token(stack))
    async with app.router.lifespan_context(app):
        res = app.state.resources
        db = res.db
        # An address of its own: the suite's other logins from 127.0.0.1 count against that one's limit.
        transport = httpx.ASGITransport(app=app, client=(f"10.{random.randrange(256)}.{random.randrange(256)}.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as c:
            # Accounts: register, log in, refresh, who am I, log out (the token family revoked).
            email = f"sk.{uid}@example.com"
            tokens = await register_and_login(c, email, "pw-123456789")
            r = await c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
            assert r.status_code == 200, r.text
            cust, refresh = bearer(r.json()["access_token"]), r.json()["refresh_token"]
            assert (await c.get("/v1/auth/me", headers=cust)).status_code == 200
            # Devices: issue, list, post a fix, revoke.
            driver = _driver(uid)
            issued = (await c.post(f"/v1/drivers/{driver}/devices", headers=admin)).json()
            assert (await c.get(f"/v1/drivers/{driver}/devices", headers=admin)).status_code == 200
            fix = {"seq": 1, "ts": datetime.now(UTC).isoformat(), "lat": 52.5, "lon": 13.4}
            r = await c.post("/v1/telemetry", json={"pings": [fix]}, headers=bearer(issued["token"]))
            assert r.status_code == 202, r.text

            # History: buckets and their directory as the store writes them, a replay (collision),
            # read back through the directory; a driver without a directory reads by range.
            t0 = datetime.now(UTC) - timedelta(minutes=5)
            pings = [GpsPing(driver_id=driver, seq=s, ts=t0 + timedelta(seconds=s), lat=52.5, lon=13.4)
                     for s in range(1, 11)]  # fmt: skip
            buckets = [track_bucket(driver, pings[:5]), track_bucket(driver, pings[5:])]
            tracks = TrackSink(db)
            await tracks.insert(buckets)
            assert await tracks.insert(buckets[:1])  # the replay: the stored bucket's last seq is read
            await TrackIndexSink(res.redis).write(buckets)
            r = await c.get(f"/v1/drivers/{driver}/track", headers=admin)
            assert r.status_code == 200 and len(r.json()["pings"]) == 10, r.text
            other = _driver(uid)
            await tracks.insert([track_bucket(other, [GpsPing(driver_id=other, seq=1, ts=t0, lat=1.0, lon=2.0)])])
            r = await c.get(f"/v1/drivers/{other}/track", headers=admin)
            assert r.status_code == 200 and len(r.json()["pings"]) == 1, r.text
            await DriverStateSink(db).write([{"_id": driver, "seq": 10, "lat": 52.5, "lon": 13.4}])

            # Trips and stops as the store writes them (a day document by _id), and the reports.
            trip = Trip(trip_id=f"{driver}:1", driver_id=driver, start=t0, end=t0 + timedelta(seconds=9),
                        start_lat=52.5, start_lon=13.4, distance_m=90.0, driving_s=9.0, first_seq=1)  # fmt: skip
            stop = Stop(stop_id=f"{driver}:10", driver_id=driver, start=t0 + timedelta(seconds=9), lat=52.5, lon=13.4,
                        first_seq=10)  # fmt: skip
            await TripDaySink(db).write([
                MovementEvent(event_id=uuid.uuid4(), type="trip.closed", driver_id=driver, rev=10, trip=trip),
                MovementEvent(event_id=uuid.uuid4(), type="stop.opened", driver_id=driver, rev=10, stop=stop),
            ])  # fmt: skip
            r = await c.get(f"/v1/drivers/{driver}/summary", headers=admin)
            assert r.status_code == 200 and (r.json()["trips"], r.json()["stops"]) == (1, 1), r.text

            # Zones and their events: create, list, get, replace, events of the zone, delete.
            zone = {"name": "depot", "circle": {"center": {"lat": 52.5, "lon": 13.4}, "radius_m": 300}}
            z = (await c.post("/v1/zones", json=zone, headers=admin)).json()
            zid = z["zone_id"]
            fence = GeofenceEvent(type="geofence.enter", driver_id=driver, zone_id=zid, zone_name="depot",
                                  lat=52.5, lon=13.4, at=datetime.now(UTC))  # fmt: skip
            await InsertOnceSink(db, "geofence_events").write([geofence_doc(fence)])
            assert (await c.get("/v1/zones", headers=admin)).status_code == 200
            assert (await c.get(f"/v1/zones/{zid}", headers=admin)).status_code == 200
            assert (await c.put(f"/v1/zones/{zid}", json=zone, headers=admin)).status_code == 200
            r = await c.get(f"/v1/zones/{zid}/events", headers=admin)
            assert r.status_code == 200 and len(r.json()) == 1, r.text
            assert (await c.delete(f"/v1/zones/{zid}", headers=admin)).status_code == 204

            # Bookings as the store writes them (latest by version, the timeline once), read back
            # by id and timeline (no Redis mirror: MongoDB answers), and the lists.
            me = (await c.get("/v1/auth/me", headers=cust)).json()
            created = BookingEvent(type="booking.requested", booking_id=uuid.uuid4(), status="requested",
                                   customer_id=me["id"], pickup={"lat": 52.5, "lon": 13.4},
                                   dropoff={"lat": 52.51, "lon": 13.41}, parcel_size="small",
                                   created_at=datetime.now(UTC), command_id=uuid.uuid4(), version=1)  # fmt: skip
            bid = str(created.booking_id)
            await InsertOnceSink(db, "booking_events").write([booking_event_doc(created)])
            await LatestSink(db, "bookings", "version").write([booking_doc(created)])
            assert (await c.get(f"/v1/bookings/{bid}", headers=cust)).status_code == 200
            assert (await c.get(f"/v1/bookings/{bid}/events", headers=cust)).status_code == 200
            r = await c.get("/v1/bookings", headers=cust)
            assert r.status_code == 200 and [b["booking_id"] for b in r.json()["items"]] == [bid], r.text
            assert (await c.get("/v1/bookings", params={"status": "requested"}, headers=admin)).status_code == 200
            assert (await c.delete(f"/v1/devices/{issued['token_id']}", headers=admin)).status_code == 204
            assert (await c.post("/v1/auth/logout", json={"refresh_token": refresh})).status_code == 204

    bad, broadcasts = problems(recorder.seen)
    assert not bad, bad
    sharded = {c.name for c in COLLECTIONS if c.shard_key is not None}
    touched = {coll for _, coll, _ in recorder.seen}
    assert sharded <= touched, sharded - touched  # each sharded collection was exercised
    declared = {(c.name, b) for c in COLLECTIONS for b in c.broadcast}
    assert broadcasts == declared, declared - broadcasts  # and no broadcast allowance is stale


def test_the_k8s_init_job_shards_exactly_the_declared_collections() -> None:
    init = (ROOT / "deploy" / "k8s" / "mongodb.yaml").read_text()
    found = {m[0]: m[1] for m in re.findall(r"shardCollection: 'fleetstream\.(\w+)', key: \{([^}]*)\}", init)}
    want = {c.name: ", ".join(f"{f}: {'1' if k == 1 else repr(k)}" for f, k in c.shard_key)
            for c in COLLECTIONS if c.shard_key is not None}  # fmt: skip
    assert found == want
