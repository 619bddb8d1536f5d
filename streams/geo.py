"""Geometry shared by agents and the API: distances and a zone index with an H3 prefilter.

A ping far from every zone costs one H3 lookup and a dict miss, whatever the number of
zones; only zones whose covering cells contain the ping's cell get an exact test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import h3
from shapely import prepared
from shapely.geometry import Point, Polygon

EARTH_RADIUS_M = 6_371_008.8
H3_RES = 8  # cells of ~0.74 km²: small enough to prefilter city zones, few cells per zone
MAX_CELLS_PER_ZONE = 50_000  # larger zones are kept in a (short) list tested by bounding box


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def circle_polygon(lat: float, lon: float, radius_m: float, sides: int = 32) -> list[tuple[float, float]]:
    """(lat, lon) ring approximating a circle; used for covering cells, not for the exact test."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
    return [
        (lat + dlat * math.sin(2 * math.pi * i / sides), lon + dlon * math.cos(2 * math.pi * i / sides))
        for i in range(sides)
    ]


@dataclass
class Zone:
    zone_id: str
    name: str
    tags: list[str]
    dwell_s: float | None
    ring: list[tuple[float, float]] | None = None  # (lat, lon) for polygons
    center: tuple[float, float] | None = None  # (lat, lon) for circles
    radius_m: float = 0.0
    _shape: Any = field(default=None, repr=False)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Zone:
        z = cls(str(doc["_id"]), doc["name"], list(doc.get("tags", [])), doc.get("dwell_s"))
        if doc.get("polygon"):
            z.ring = [(p["lat"], p["lon"]) for p in doc["polygon"]]
            z._shape = prepared.prep(Polygon([(lon, lat) for lat, lon in z.ring]))
        else:
            c = doc["circle"]
            z.center, z.radius_m = (c["center"]["lat"], c["center"]["lon"]), float(c["radius_m"])
        return z

    def contains(self, lat: float, lon: float) -> bool:
        if self.center is not None:
            return haversine_m(lat, lon, *self.center) <= self.radius_m
        return bool(self._shape.covers(Point(lon, lat)))

    def outline(self) -> list[tuple[float, float]]:
        if self.ring is not None:
            return self.ring
        assert self.center is not None
        return circle_polygon(*self.center, self.radius_m * 1.05)

    def cells(self) -> set[str] | None:
        """Cells covering the zone (with a ring of neighbours for the edges), or None if too large."""
        ring = self.outline()
        inner = set(h3.polygon_to_cells(h3.LatLngPoly(ring), H3_RES))
        edge = {h3.latlng_to_cell(lat, lon, H3_RES) for lat, lon in ring}
        core = inner | edge
        if len(core) * 7 > MAX_CELLS_PER_ZONE:
            return None
        covered: set[str] = set()
        for c in core:
            covered.update(h3.grid_disk(c, 1))
        return covered

    def bbox(self) -> tuple[float, float, float, float]:
        lats = [p[0] for p in self.outline()]
        lons = [p[1] for p in self.outline()]
        return min(lats), min(lons), max(lats), max(lons)


class ZoneIndex:
    def __init__(self, zones: Iterable[Zone] = ()) -> None:
        self.by_cell: dict[str, list[Zone]] = {}
        self.large: list[tuple[tuple[float, float, float, float], Zone]] = []
        self.zones: dict[str, Zone] = {}
        for z in zones:
            self.zones[z.zone_id] = z
            cells = z.cells()
            if cells is None:
                self.large.append((z.bbox(), z))
                continue
            for c in cells:
                self.by_cell.setdefault(c, []).append(z)

    def candidates(self, lat: float, lon: float) -> list[Zone]:
        found = self.by_cell.get(h3.latlng_to_cell(lat, lon, H3_RES), [])
        if self.large:
            found = found + [z for (a, b, c, d), z in self.large if a <= lat <= c and b <= lon <= d]
        return found

    def containing(self, lat: float, lon: float) -> list[Zone]:
        return [z for z in self.candidates(lat, lon) if z.contains(lat, lon)]
