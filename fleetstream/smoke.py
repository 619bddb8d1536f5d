"""A short end-to-end run for the README's first command: devices post over HTTP, the
platform cleans, tracks and stores; this prints what flowed at each stage."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console

from core.config import Settings


def drive(driver: str, batches: int, per_batch: int, rnd: random.Random) -> list[list[dict[str, Any]]]:
    """A plausible track: ~10 m/s with a little wander, one fix per second."""
    start = datetime.now(UTC) - timedelta(seconds=batches * per_batch + 5)
    lat, lon = 52.52 + rnd.uniform(-0.05, 0.05), 13.40 + rnd.uniform(-0.05, 0.05)
    out, seq = [], 0
    for _ in range(batches):
        pings = []
        for _ in range(per_batch):
            lat += rnd.uniform(-4e-5, 9e-5)
            lon += rnd.uniform(-4e-5, 9e-5)
            pings.append({"seq": seq, "ts": (start + timedelta(seconds=seq)).isoformat(), "lat": lat, "lon": lon,
                          "accuracy_m": 5.0, "speed_mps": 10.0, "heading_deg": 45.0})  # fmt: skip
            seq += 1
        out.append(pings)
    return out


async def run_smoke(settings: Settings, url: str, drivers: int, batches: int, timeout: float, console: Console) -> bool:
    from api.security import admin_token

    rnd = random.Random(7)
    run_id = uuid.uuid4().hex[:6]
    ids = [f"smoke-{run_id}-{i}" for i in range(drivers)]
    admin = {"Authorization": f"Bearer {admin_token(settings)}"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        tokens = {}
        for d in ids:
            r = await c.post(f"/v1/drivers/{d}/devices", headers=admin)
            r.raise_for_status()
            tokens[d] = r.json()["token"]
        t0 = time.monotonic()
        accepted = 0
        tracks = {d: drive(d, batches, 10, rnd) for d in ids}
        for b in range(batches):
            results = await asyncio.gather(
                *(c.post("/v1/telemetry", json={"pings": tracks[d][b]},
                         headers={"Authorization": f"Bearer {tokens[d]}"}) for d in ids)
            )  # fmt: skip
            accepted += sum(r.json()["accepted"] for r in results if r.status_code == 202)
        console.print(f"posted {drivers * batches} batches over HTTP: {accepted} pings accepted (202)")
        live = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and live < drivers:
            await asyncio.sleep(0.5)
            states = await asyncio.gather(*(c.get(f"/v1/drivers/{d}", headers=admin) for d in ids))
            live = sum(1 for s in states if s.status_code == 200 and s.json()["seq"] == batches * 10 - 1)
        # History reads are sequential and sampled: FerretDB scans a collection for any
        # query but an _id lookup, so a burst of track reads is slow on the test server.
        sample = ids[:5]
        stored = 0
        while time.monotonic() < deadline:
            pages = [await c.get(f"/v1/drivers/{d}/track", headers=admin, timeout=60) for d in sample]
            stored = sum(len(p.json()["pings"]) for p in pages if p.status_code == 200)
            if stored >= len(sample) * batches * 10:
                break
            await asyncio.sleep(1)
        took = time.monotonic() - t0
        console.print(f"live state in Redis (GET /v1/drivers/{{id}}) current for {live}/{drivers} drivers")
        expected = len(sample) * batches * 10
        console.print(f"track history in MongoDB (GET /v1/drivers/{{id}}/track, {len(sample)} drivers): "
                      f"{stored}/{expected} pings")  # fmt: skip
        near = await c.get("/v1/drivers/nearby", params={"lat": 52.52, "lon": 13.40, "radius_m": 10000}, headers=admin)
        console.print(f"nearby search around Berlin centre: {len(near.json())} drivers within 10 km")
        console.print(f"end to end in {took:.1f}s")
        return live == drivers and stored == expected and accepted == drivers * batches * 10
