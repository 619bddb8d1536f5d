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
import numpy
import shapely
from shapely.geometry import LineString, Point, Polygon

from schemas.zones import DETECT_DEFAULT

_intersects_xy = shapely.lib.intersects_xy
EARTH_RADIUS_M = 6_371_008.8
H3_RES = 8  # cells of ~0.74 km²: the coarse covering of zones that detect cross, for segments
MAX_CELLS_PER_ZONE = 50_000  # larger cross zones are kept in a (short) list tested by bounding box
#: Containment: a zone is classified on cells of the finest resolution, down to ``COARSEST_RES``,
#: at which its box holds at most ``CELLS_PER_ZONE`` cells (res 11: ~29 m edges, ~2,150 m²).
FINE_RES = 11
COARSEST_RES = 0
CELLS_PER_ZONE = 600


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
            z._shape = Polygon([(lon, lat) for lat, lon in z.ring])
            shapely.prepare(z._shape)  # in place: every test below uses the prepared geometry
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
        # Edge included, no Point built; the ufunc itself (shapely's wrapper doubles the cost per call).
        return bool(_intersects_xy(self._shape, lon, lat))

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


def _cell_radius_m(cell: str) -> float:
    """The farthest a point of ``cell`` is from its centre."""
    lat, lon = h3.cell_to_latlng(cell)
    return max(haversine_m(lat, lon, a, b) for a, b in h3.cell_to_boundary(cell))


def classify(z: Zone) -> tuple[int, list[str], list[str]]:
    """The resolution ``z`` is indexed at, the cells wholly inside it, and the cells its edge crosses.

    The finest resolution (at most ``FINE_RES``) at which the zone's bounding box, widened by
    a cell, holds at most ``CELLS_PER_ZONE`` cells. A cell whose centre is farther than the
    cell's radius from the zone's edge is wholly inside or wholly outside (dropped); the
    rest are boundary cells, the only ones where a fix needs the geometry. Distances are
    taken conservatively (a polygon's in degrees, scaled by the smallest metres per degree
    of its box), so a cell called interior is interior.
    """
    s, w, n, e = z.bbox()
    lat_mid = (s + n) / 2
    k = math.radians(1.0) * EARTH_RADIUS_M
    h_m, w_m = (n - s) * k, (e - w) * k * math.cos(math.radians(lat_mid))
    res = FINE_RES
    while res > COARSEST_RES:
        edge = h3.average_hexagon_edge_length(res, "m") * 2
        if (h_m + 2 * edge) * (w_m + 2 * edge) / h3.average_hexagon_area(res, "m^2") <= CELLS_PER_ZONE:
            break
        res -= 1
    probes = [h3.latlng_to_cell(a, b, res) for a, b in ((lat_mid, (w + e) / 2), (s, w), (s, e), (n, w), (n, e))]
    radius = 1.1 * max(_cell_radius_m(c) for c in probes)
    dlat = math.degrees(radius / EARTH_RADIUS_M)
    min_cos = _min_cos(s, n, dlat)  # the narrowest degree of longitude in the widened box
    dlon = dlat / min_cos
    box = h3.LatLngPoly([(s - dlat, w - dlon), (s - dlat, e + dlon), (n + dlat, e + dlon), (n + dlat, w - dlon)])
    cells = list(h3.polygon_to_cells(box, res))
    if not cells:
        cells = [probes[0]]
    centres = numpy.array([h3.cell_to_latlng(c) for c in cells])
    lats, lons = centres[:, 0], centres[:, 1]
    if z.center is not None:
        d = _haversine_many(z.center[0], z.center[1], lats, lons)
        inside, edge_m = d <= z.radius_m, numpy.abs(d - z.radius_m)
    else:
        assert z.ring is not None
        shape = Polygon([(b, a) for a, b in z.ring])
        inside = shapely.contains_xy(shape, lons, lats)
        # A degree of latitude is k metres, of longitude k * cos(lat) >= k * (the box's smallest cos).
        edge_m = shapely.distance(shape.exterior, shapely.points(lons, lats)) * k * min_cos
    interior = [c for c, i, m in zip(cells, inside, edge_m, strict=True) if i and m > radius]
    boundary = [c for c, m in zip(cells, edge_m, strict=True) if m <= radius]
    return res, interior, boundary


def _min_cos(s: float, n: float, dlat: float) -> float:
    """cos of the largest |latitude| of the band from ``s - dlat`` to ``n + dlat``."""
    return max(math.cos(math.radians(min(max(abs(s - dlat), abs(n + dlat)), 89.9))), 1e-6)


def _haversine_many(lat: float, lon: float, lats: Any, lons: Any) -> Any:
    p1, p2 = math.radians(lat), numpy.radians(lats)
    dp, dl = p2 - p1, numpy.radians(lons - lon)
    a = numpy.sin(dp / 2) ** 2 + math.cos(p1) * numpy.cos(p2) * numpy.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * numpy.arcsin(numpy.minimum(1.0, numpy.sqrt(a)))


class ZoneIndex:
    """Zones by H3 cell, each cell knowing the zones that wholly cover it and those whose edge crosses it.

    A fix is looked up at the few resolutions zones are indexed at (``classify``); zones
    covering its cell contain it with no geometry, and only the zones whose edge runs
    through the cell are tested exactly. At Tile38's density (25,000 zones over 12 x 12 km)
    that is about a dozen tests where a coarse prefilter handed over a thousand candidates.
    A zone is added, replaced or removed alone (``put``, ``remove``): the cost of its cells.
    Zones that detect ``cross`` are also kept by coarse covering cell, for segments.
    """

    def __init__(self, zones: Iterable[Zone] = ()) -> None:
        self.zones: dict[str, Zone] = {}
        self.cells: dict[str, tuple[list[Zone], list[Zone]]] = {}  # cell → (covering it, edge through it)
        self.cross: dict[str, Zone] = {}  # the zones that detect cross
        self.by_cell: dict[str, list[Zone]] = {}  # cross zones by coarse covering cell (H3_RES, with a ring)
        self.large: list[tuple[tuple[float, float, float, float], Zone]] = []  # cross zones too big for that
        self._res: dict[str, int] = {}  # zone id → the resolution it is indexed at
        self._coarse: dict[str, set[str] | None] = {}
        self._resolutions: dict[int, int] = {}  # resolution → zones indexed at it
        self._order: list[int] = []
        for z in zones:
            self.put(z)

    def put(self, z: Zone) -> None:
        """Add ``z``, or replace the zone of its id: the cost of that zone's cells, not of the index."""
        if z.zone_id in self.zones:
            self.remove(z.zone_id)
        self.zones[z.zone_id] = z
        res, interior, boundary = classify(z)
        self._res[z.zone_id] = res
        for c in interior:
            self.cells.setdefault(c, ([], []))[0].append(z)
        for c in boundary:
            self.cells.setdefault(c, ([], []))[1].append(z)
        self._resolutions[res] = self._resolutions.get(res, 0) + 1
        self._order = sorted(self._resolutions, reverse=True)
        if "cross" in z.detect:
            self.cross[z.zone_id] = z
            coarse = z.cells()
            self._coarse[z.zone_id] = coarse
            if coarse is None:
                self.large.append((z.bbox(), z))
            else:
                for c in coarse:
                    self.by_cell.setdefault(c, []).append(z)

    def remove(self, zone_id: str) -> None:
        old = self.zones.pop(zone_id, None)
        if old is None:
            return
        # Its cells again (classify is deterministic): keeping every zone's cell ids cost more
        # memory than the index (190 of 233 MiB at 25,000 zones) to save a rare 0.5 ms.
        res, interior, boundary = classify(old)
        assert res == self._res.pop(zone_id)
        for side, cells in ((0, interior), (1, boundary)):
            for c in cells:
                entry = self.cells[c]
                entry[side][:] = [z for z in entry[side] if z.zone_id != zone_id]
                if not entry[0] and not entry[1]:
                    del self.cells[c]
        self._resolutions[res] -= 1
        if not self._resolutions[res]:
            del self._resolutions[res]
        self._order = sorted(self._resolutions, reverse=True)
        if self.cross.pop(zone_id, None) is not None:
            coarse = self._coarse.pop(zone_id)
            if coarse is None:
                self.large = [(b, z) for b, z in self.large if z.zone_id != zone_id]
                return
            for c in coarse:
                kept = [z for z in self.by_cell[c] if z.zone_id != zone_id]
                if kept:
                    self.by_cell[c] = kept
                else:
                    del self.by_cell[c]

    def lookup(self, lat: float, lon: float) -> tuple[list[Zone], list[Zone]]:
        """(zones that surely contain the point, zones whose edge is near it: test those)."""
        sure: list[Zone] = []
        near: list[Zone] = []
        if not self._order:
            return sure, near
        fine = h3.latlng_to_cell(lat, lon, self._order[0])
        for res in self._order:
            entry = self.cells.get(fine if res == self._order[0] else h3.cell_to_parent(fine, res))
            if entry is not None:
                sure += entry[0]
                near += entry[1]
        return sure, near

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
            found = list(self.cross.values())
        else:  # by_cell and large hold only zones that detect cross
            seen = {z.zone_id: z for cell in path for z in self.by_cell.get(cell, ())}
            found = list(seen.values()) + [z for _, z in self.large]
        return [z for z in found if z.cut_by(a, b)]

    def candidates(self, lat: float, lon: float) -> list[Zone]:
        """Every zone the point might be in (sure or near an edge)."""
        sure, near = self.lookup(lat, lon)
        return sure + near

    def containing(self, lat: float, lon: float) -> list[Zone]:
        sure, near = self.lookup(lat, lon)
        return sure + [z for z in near if z.contains(lat, lon)]
