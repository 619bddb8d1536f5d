"""The fleet's speed model, pure: speeds learned per H3 cell and hour, and travel times priced with them.

Used by the ETA step (``streams.eta``), the simulator and the matching benchmark; importing it
starts no agent.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, MutableSet, Sequence

import h3

from core.config import Settings
from schemas import GpsPing
from streams.geo import haversine_m

SPEED_RES = 7


def speed_key(lat: float, lon: float, hour: int) -> str:
    return f"{h3.latlng_to_cell(lat, lon, SPEED_RES)}:{hour}"


def learn(current: float | None, observed: float, rate: float) -> float:
    return observed if current is None else current + rate * (observed - current)


def learn_batch(pings: Sequence[GpsPing], hour: int, speeds: MutableMapping[str, float],
                dirty: MutableSet[str], rate: float) -> None:  # fmt: skip
    """Learn from one device batch's moving pings, in order.

    A batch spans seconds and a cell is ~1.2 km across: when its first and last moving
    pings are in one cell, so (barring a path that leaves and comes back within the batch)
    are the rest, and one cell lookup serves them all (57 vs 11 us per 50 pings).
    """
    moving = [(p, v) for p in pings if (v := p.speed_mps) is not None and v > 0.5]  # parked says nothing of traffic
    if not moving:
        return
    first = speed_key(moving[0][0].lat, moving[0][0].lon, hour)
    if len(moving) > 1 and speed_key(moving[-1][0].lat, moving[-1][0].lon, hour) != first:
        for p, v in moving:
            k = speed_key(p.lat, p.lon, hour)
            speeds[k] = learn(speeds.get(k), v, rate)
            dirty.add(k)
        return
    current = speeds.get(first)
    for _, v in moving:
        current = learn(current, v, rate)
    speeds[first] = current  # type: ignore[assignment]  # moving is not empty
    dirty.add(first)


def travel_s(lat: float, lon: float, to_lat: float, to_lon: float, speeds: Mapping[str, float], hour: int,
             s: Settings) -> float:  # fmt: skip
    """Straight line x road factor, each H3 cell the line crosses at the speed learned there.

    One cell's speed for the whole trip would price a drive into a jammed centre at the
    suburb's speed the driver is in now.
    """
    distance = haversine_m(lat, lon, to_lat, to_lon) * s.road_factor
    a, b = h3.latlng_to_cell(lat, lon, SPEED_RES), h3.latlng_to_cell(to_lat, to_lon, SPEED_RES)
    try:
        cells = h3.grid_path_cells(a, b) if a != b else [a]
    except h3.H3BaseException:  # no grid path (across a pentagon): the start cell's speed
        cells = [a]
    share = distance / len(cells)
    return sum(share / max(speeds.get(f"{c}:{hour}", s.default_speed_mps), 0.5) for c in cells)
