"""The demo's synthetic city: a road graph shipped as data, routing on it, and vehicles driving it.

``core/data/city.json`` is a 12 x 12 km grid centred in Berlin's coordinates:
30 km/h streets every 400 m, 50 km/h arterials every 2 km, an 80 km/h ring road, and a
few blocks closed so that routes are not all straight lines. ``python -m fleetstream.city``
writes it again (deterministic). Vehicles drive at the edge's limit times the traffic
factor of where they are (the centre is congested), which is what the platform's
learned speeds have to discover and a constant-speed ETA cannot.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from core.assets import CITY_JSON
from streams.geo import haversine_m

DATA = CITY_JSON  # the road graph this module writes and the API serves
CENTRE = (52.52, 13.405)
M_PER_DEG_LAT = 111_320.0


def traffic(lat: float, lon: float) -> float:
    """Share of the speed limit that traffic allows here: the centre (≤ 2.5 km) crawls."""
    return 0.45 if haversine_m(lat, lon, *CENTRE) <= 2_500 else 1.0


@dataclass
class City:
    nodes: list[tuple[float, float]]
    edges: list[tuple[int, int, float]]  # u, v, speed limit (m/s); roads are two-way

    @classmethod
    def load(cls, path: Path = DATA) -> City:
        doc = json.loads(path.read_text())
        return cls([tuple(n) for n in doc["nodes"]], [tuple(e) for e in doc["edges"]])

    @cached_property
    def _lengths(self) -> list[float]:
        return [haversine_m(*self.nodes[u], *self.nodes[v]) for u, v, _ in self.edges]

    @cached_property
    def _graph(self) -> csr_matrix:
        n = len(self.nodes)
        us = [u for u, _, _ in self.edges] + [v for _, v, _ in self.edges]
        vs = [v for _, v, _ in self.edges] + [u for u, _, _ in self.edges]
        secs = [length / lim for length, (_, _, lim) in zip(self._lengths, self.edges, strict=True)] * 2
        return csr_matrix((secs, (us, vs)), shape=(n, n))

    @cached_property
    def limits(self) -> dict[tuple[int, int], float]:
        out = {}
        for u, v, lim in self.edges:
            out[(u, v)] = out[(v, u)] = lim
        return out

    @cached_property
    def _tree(self) -> cKDTree:
        lat0 = math.radians(CENTRE[0])
        return cKDTree(np.array([(lat, lon * math.cos(lat0)) for lat, lon in self.nodes]))

    def nearest(self, lat: float, lon: float) -> int:
        return int(self._tree.query((lat, lon * math.cos(math.radians(CENTRE[0]))))[1])

    def route(self, a: int, b: int) -> list[int]:
        """Fastest path by speed limits (what a navigation app would pick), as node ids."""
        _, pred = dijkstra(self._graph, indices=a, return_predecessors=True)
        path = [b]
        while path[-1] != a:
            prev = int(pred[path[-1]])
            if prev < 0:
                raise ValueError(f"no route from {a} to {b}")
            path.append(prev)
        return path[::-1]

    def random_node(self, rng: random.Random, central: float = 0.5) -> int:
        """A place people want to go: ``central`` of them near the centre, the rest anywhere."""
        if rng.random() < central:
            lat = CENTRE[0] + rng.gauss(0, 1_500) / M_PER_DEG_LAT
            lon = CENTRE[1] + rng.gauss(0, 1_500) / (M_PER_DEG_LAT * math.cos(math.radians(CENTRE[0])))
            return self.nearest(lat, lon)
        return rng.randrange(len(self.nodes))


@dataclass
class Vehicle:
    """Drives a route on the city at the limit times traffic times its own temperament."""

    city: City
    node: int
    temperament: float = 1.0
    path: list[int] = field(default_factory=list)
    leg: int = 0  # index in path of the node we left
    along_m: float = 0.0
    speed_mps: float = 0.0
    heading_deg: float = 0.0

    @property
    def position(self) -> tuple[float, float]:
        if not self.moving:
            return self.city.nodes[self.node]
        (la, lo), (lb, lob) = self.city.nodes[self.path[self.leg]], self.city.nodes[self.path[self.leg + 1]]
        f = min(1.0, self.along_m / max(haversine_m(la, lo, lb, lob), 1e-6))
        return la + (lb - la) * f, lo + (lob - lo) * f

    @property
    def moving(self) -> bool:
        return self.leg + 1 < len(self.path)

    def go(self, target: int) -> None:
        self.path = self.city.route(self.node, target) if target != self.node else []
        self.leg, self.along_m = 0, 0.0

    def step(self, dt: float) -> bool:
        """Advance ``dt`` seconds; True when the route's end was reached in this step."""
        if not self.moving:
            self.speed_mps = 0.0
            return False
        left = dt
        while left > 0 and self.moving:
            a, b = self.path[self.leg], self.path[self.leg + 1]
            (la, lo), (lb, lob) = self.city.nodes[a], self.city.nodes[b]
            length = haversine_m(la, lo, lb, lob)
            here = self.position
            self.speed_mps = self.city.limits[(a, b)] * traffic(*here) * self.temperament
            self.heading_deg = math.degrees(math.atan2((lob - lo) * math.cos(math.radians(la)), lb - la)) % 360
            need = (length - self.along_m) / self.speed_mps
            if need > left:
                self.along_m += self.speed_mps * left
                left = 0
            else:
                left -= need
                self.leg += 1
                self.along_m = 0.0
                self.node = b
        if not self.moving:
            self.path, self.leg = [], 0
            return True
        return False


def build(size_m: float = 12_000, block_m: float = 400, seed: int = 11) -> dict[str, object]:
    rng = random.Random(seed)
    n = int(size_m // block_m) + 1
    lat0, lon0 = CENTRE
    dlat = block_m / M_PER_DEG_LAT
    dlon = block_m / (M_PER_DEG_LAT * math.cos(math.radians(lat0)))
    half = (n - 1) / 2
    nodes = [
        (round(lat0 + (i - half) * dlat, 6), round(lon0 + (j - half) * dlon, 6)) for i in range(n) for j in range(n)
    ]

    def limit(line: int) -> float:
        if line in (2, n - 3):
            return 22.2  # ring road, 80 km/h
        return 13.9 if line % 5 == 0 else 8.3  # arterials 50 km/h, streets 30 km/h

    edges = []
    for i in range(n):
        for j in range(n):
            u = i * n + j
            for v, line in ((u + 1, i) if j + 1 < n else (None, 0), (u + n, j) if i + 1 < n else (None, 0)):
                if v is None:
                    continue
                if limit(line) == 8.3 and rng.random() < 0.06:
                    continue  # a closed block
                edges.append((u, v, limit(line)))
    city = City(nodes, edges)
    parts, _ = connected_components(city._graph, directed=False)
    assert parts == 1, "the closures split the city"
    return {"name": "gridtown", "block_m": block_m, "nodes": nodes, "edges": edges}


if __name__ == "__main__":
    DATA.parent.mkdir(parents=True, exist_ok=True)
    doc = build()
    DATA.write_text(json.dumps(doc, separators=(",", ":")))
    print(f"wrote {DATA}: {len(doc['nodes'])} nodes, {len(doc['edges'])} roads")  # type: ignore[arg-type]
