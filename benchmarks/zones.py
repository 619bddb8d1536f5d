"""Geofence rules against many zones, in one process: pings judged per second, and what a zone change costs.

    python -m benchmarks.zones --zones 10,25000 --drivers 2000 --pings 40000 --out benchmarks/results/zones.json

The density of Tile38's report (tile38#491) and of the figure in issue 17: circles and
5-20-vertex polygons 100-800 m across, spread uniformly over 12 x 12 km (about 34
zones' bounding boxes hold a typical point, a fifth of the zones overlap another);
drivers random-walk 10 m per fix. Each fix goes through ``streams.rules.fence_changes``
with the driver's state, as the geofence step calls it (no Kafka, no Redis: the rule and
the index alone, which is where the zone count matters). A zone change is timed both
ways: building the whole index (what a reload did) and putting one zone in.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas import GpsPing
from streams.geo import EARTH_RADIUS_M, Zone, ZoneIndex
from streams.rules import fence_changes

LAT0, LON0, SIDE_M = 52.45, 13.30, 12_000.0
M_LAT = math.degrees(1 / EARTH_RADIUS_M)
M_LON = M_LAT / math.cos(math.radians(LAT0))


def zone_doc(i: int, rnd: random.Random) -> dict[str, Any]:
    lat = LAT0 + rnd.random() * SIDE_M * M_LAT
    lon = LON0 + rnd.random() * SIDE_M * M_LON
    across = rnd.uniform(100, 800)
    if rnd.random() < 0.5:
        return {"_id": f"z{i}", "name": f"z{i}", "circle": {"center": {"lat": lat, "lon": lon}, "radius_m": across / 2}}
    n = rnd.randint(5, 20)
    angles = sorted(rnd.uniform(0, 2 * math.pi) for _ in range(n))
    ring = []
    for a in angles:  # a star-shaped polygon around the centre: always valid
        r = across / 2 * rnd.uniform(0.6, 1.0)
        ring.append({"lat": lat + r * math.sin(a) * M_LAT, "lon": lon + r * math.cos(a) * M_LON})
    return {"_id": f"z{i}", "name": f"z{i}", "polygon": ring}


def fixes(drivers: int, count: int, rnd: random.Random) -> list[GpsPing]:
    pos = [(LAT0 + rnd.random() * SIDE_M * M_LAT, LON0 + rnd.random() * SIDE_M * M_LON, rnd.uniform(0, 6.3))
           for _ in range(drivers)]  # fmt: skip
    t0 = datetime(2026, 12, 1, 8, tzinfo=UTC)
    out = []
    for k in range(count):
        d = k % drivers
        lat, lon, heading = pos[d]
        heading += rnd.uniform(-0.3, 0.3)
        lat, lon = lat + 10 * math.cos(heading) * M_LAT, lon + 10 * math.sin(heading) * M_LON
        pos[d] = (lat, lon, heading)
        out.append(GpsPing(driver_id=f"d{d}", seq=k // drivers, ts=t0 + timedelta(seconds=k // drivers), lat=lat,
                           lon=lon, accuracy_m=rnd.choice((None, 5.0, 10.0, 20.0))))  # fmt: skip
    return out


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def run(n_zones: int, drivers: int, n_pings: int, seed: int) -> dict[str, Any]:
    rnd = random.Random(seed)
    docs = [zone_doc(i, rnd) for i in range(n_zones)]
    zones = [Zone.from_doc(d) for d in docs]
    rss0 = _rss_mib()
    t = time.perf_counter()
    index = ZoneIndex(zones)
    build_s = time.perf_counter() - t
    index_mib = _rss_mib() - rss0
    probe = fixes(drivers, 2000, random.Random(seed + 1))
    boxes = statistics.mean(
        sum(1 for z in zones if (b := z.bbox())[0] <= p.lat <= b[2] and b[1] <= p.lon <= b[3]) for p in probe[:200]
    )
    candidates = statistics.mean(len(index.candidates(p.lat, p.lon)) for p in probe)
    pings = fixes(drivers, n_pings, random.Random(seed + 2))
    state: dict[str, dict[str, dict[str, Any]]] = {}
    events = 0
    t = time.perf_counter()
    for p in pings:
        events += len(fence_changes(state.setdefault(p.driver_id, {}), p, index, 300.0))
    judged_s = time.perf_counter() - t
    puts = []
    for i in range(50):
        z = Zone.from_doc(zone_doc(n_zones + i, rnd))
        t = time.perf_counter()
        index.put(z)
        puts.append(time.perf_counter() - t)
    return {
        "zones": n_zones, "drivers": drivers, "pings": n_pings,
        "pings_per_s": round(n_pings / judged_s), "events": events,
        "bbox_hits_per_point": round(boxes, 1), "candidates_per_point": round(candidates, 1),
        "index_build_s": round(build_s, 3), "index_rss_mib": round(index_mib, 1),
        "zone_put_ms_median": round(statistics.median(puts) * 1000, 3),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zones", default="10,25000", help="comma-separated zone counts")
    ap.add_argument("--drivers", type=int, default=2000)
    ap.add_argument("--pings", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rows = []
    for n in (int(x) for x in a.zones.split(",")):
        row = run(n, a.drivers, a.pings, a.seed)
        print(json.dumps(row))
        rows.append(row)
    base = rows[0]["pings_per_s"]
    for r in rows:
        r["ratio_to_first"] = round(r["pings_per_s"] / base, 3)
    print("ratios:", [(r["zones"], r["ratio_to_first"]) for r in rows])
    if a.out:
        a.out.write_text(json.dumps({"command": "python -m benchmarks.zones " + " ".join(
            f"--{k} {v}" for k, v in (("zones", a.zones), ("drivers", a.drivers), ("pings", a.pings))),
            "runs": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
