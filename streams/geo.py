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
from shapely.geometry import LineString, Point, Polygon

from schemas.zones import DETECT_DEFAULT

EARTH_RADIUS_M = 6_371_008.8
H3_RES = 8  # cells of ~0.74 km²: small enough to prefilter city zones, few cells per zone
MAX_CELLS_PER_ZONE = 50_000  # larger zones are kept in a (short) list tested by bounding box


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _metres(origin: tuple[float, float], lat: float, lon: float) -> tuple[float, float]:
    """(x, y) metres east and north of ``origin`` (lat, lon): equirectangular, exact enough within a city."""
    k = math.radians(1.0) * EARTH_RADIUS_M
    return (lon - origin[1]) * k * math.cos(math.radians(origin[0])), (lat - origin[0]) * k


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
    #: What it reports (``schemas.zones.DETECT_DEFAULT`` unless the zone says): enter, exit, dwell, cross.
    detect: frozenset[str] = frozenset(DETECT_DEFAULT)
    _shape: Any = field(default=None, repr=False)
    _local: Any = field(default=None, repr=False)  # the ring in metres around its first vertex
    _box: tuple[float, float, float, float] | None = field(default=None, repr=False)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Zone:
        z = cls(str(doc["_id"]), doc["name"], list(doc.get("tags", [])), doc.get("dwell_s"))
        if doc.get("detect"):
            z.detect = frozenset(doc["detect"])
        if doc.get("polygon"):
            z.ring = [(p["lat"], p["lon"]) for p in doc["polygon"]]
            z._shape = prepared.prep(Polygon([(lon, lat) for lat, lon in z.ring]))
            z._local = Polygon([_metres(z.ring[0], lat, lon) for lat, lon in z.ring]).exterior
        else:
            c = doc["circle"]
            z.center, z.radius_m = (c["center"]["lat"], c["center"]["lon"]), float(c["radius_m"])
        return z

    def contains(self, lat: float, lon: float) -> bool:
        box = self._box
        if box is None:
            box = self._box = self.bbox()
        if not (box[0] <= lat <= box[2] and box[1] <= lon <= box[3]):
            return False  # four comparisons before any geometry: most candidates end here
        if self.center is not None:
            return haversine_m(lat, lon, *self.center) <= self.radius_m
        return bool(self._shape.covers(Point(lon, lat)))

    def boundary_m(self, lat: float, lon: float) -> float:
        """Distance from the point to the zone's edge, metres (inside or out)."""
        if self.center is not None:
            return abs(haversine_m(lat, lon, *self.center) - self.radius_m)
        assert self.ring is not None
        return float(self._local.distance(Point(_metres(self.ring[0], lat, lon))))

    def cut_by(self, a: tuple[float, float], b: tuple[float, float]) -> bool:
        """Whether the straight segment from fix ``a`` to fix ``b`` (lat, lon) passes through the zone."""
        if self.center is not None:
            # The closest point of the segment to the centre, on a local metric plane.
            ax, ay = _metres(self.center, *a)
            bx, by = _metres(self.center, *b)
            dx, dy = bx - ax, by - ay
            n = dx * dx + dy * dy
            t = 0.0 if n == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / n))
            return math.hypot(ax + t * dx, ay + t * dy) <= self.radius_m
        return bool(self._shape.intersects(LineString([(a[1], a[0]), (b[1], b[0])])))

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
    """Zones by covering H3 cell; a zone is added, replaced or removed alone (``put``, ``remove``)."""

    def __init__(self, zones: Iterable[Zone] = ()) -> None:
        self.by_cell: dict[str, list[Zone]] = {}
        self.large: list[tuple[tuple[float, float, float, float], Zone]] = []
        self.zones: dict[str, Zone] = {}
        self.cross: dict[str, Zone] = {}  # the zones that detect cross
        self._cells: dict[str, set[str] | None] = {}  # zone id → its cells (None: in ``large``)
        for z in zones:
            self.put(z)

    def put(self, z: Zone) -> None:
        """Add ``z``, or replace the zone of its id: the cost of that zone's cells, not of the index."""
        if z.zone_id in self.zones:
            self.remove(z.zone_id)
        self.zones[z.zone_id] = z
        if "cross" in z.detect:
            self.cross[z.zone_id] = z
        cells = z.cells()
        self._cells[z.zone_id] = cells
        if cells is None:
            self.large.append((z.bbox(), z))
            return
        for c in cells:
            self.by_cell.setdefault(c, []).append(z)

    def remove(self, zone_id: str) -> None:
        if self.zones.pop(zone_id, None) is None:
            return
        self.cross.pop(zone_id, None)
        cells = self._cells.pop(zone_id)
        if cells is None:
            self.large = [(b, z) for b, z in self.large if z.zone_id != zone_id]
            return
        for c in cells:
            kept = [z for z in self.by_cell[c] if z.zone_id != zone_id]
            if kept:
                self.by_cell[c] = kept
            else:
                del self.by_cell[c]

    def crossed(self, a: tuple[float, float], b: tuple[float, float]) -> list[Zone]:
        """Zones that detect ``cross`` whose area the segment from ``a`` to ``b`` passes through.

        The cells on the segment's path are looked up (H3's grid path: the cells between the
        two fixes' cells), so a sparse fix a kilometre on costs a handful of cells, not a scan.
        """
        if not self.cross:
            return []
        ca, cb = h3.latlng_to_cell(*a, H3_RES), h3.latlng_to_cell(*b, H3_RES)
        try:
            path = [ca] if ca == cb else h3.grid_path_cells(ca, cb)
        except h3.H3BaseException:  # no path (a pentagon between them): every cross zone is a candidate
            path = []
            found = list(self.cross.values())
        else:
            seen: dict[str, Zone] = {}
            for cell in path:
                for z in self.by_cell.get(cell, ()):
                    if "cross" in z.detect:
                        seen[z.zone_id] = z
            found = list(seen.values()) + [z for _, z in self.large if "cross" in z.detect]
        return [z for z in found if z.cut_by(a, b)]

    def candidates(self, lat: float, lon: float) -> list[Zone]:
        found = self.by_cell.get(h3.latlng_to_cell(lat, lon, H3_RES), [])
        if self.large:
            found = found + [z for (a, b, c, d), z in self.large if a <= lat <= c and b <= lon <= d]
        return found

    def containing(self, lat: float, lon: float) -> list[Zone]:
        return [z for z in self.candidates(lat, lon) if z.contains(lat, lon)]
