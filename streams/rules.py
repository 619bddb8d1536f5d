"""Pure telemetry rules (no I/O), unit-tested alone and used by the agents.

Modelled on traccar's position filters: duplicates, out-of-order, accuracy and
implied-speed jumps; and on tile38's fence semantics: enter, exit, and dwell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from operator import attrgetter
from typing import Any

from schemas import GpsPing
from streams.geo import Zone, ZoneIndex, haversine_m

_SEQ = attrgetter("seq")


@dataclass(frozen=True)
class CleanLimits:
    max_accuracy_m: float
    max_speed_mps: float


def clean_pings(
    state: dict[str, Any] | None, pings: list[GpsPing], limits: CleanLimits
) -> tuple[list[GpsPing], list[tuple[GpsPing, str, str]], dict[str, Any] | None]:
    """Split a device batch into accepted pings and (ping, reason, detail) rejects.

    ``state`` is the last accepted ping of the driver (seq, ts, lat, lon, speed and heading:
    the driver's state, see ``streams.driver_state``) and is returned updated; comparing
    against the last *accepted* fix is what stops one bad jump from poisoning the next good
    fix. The last fix is kept in locals, not as a model: this loop runs for every ping the
    platform takes.
    """
    good: list[GpsPing] = []
    bad: list[tuple[GpsPing, str, str]] = []
    max_acc, max_speed = limits.max_accuracy_m, limits.max_speed_mps
    have_last = state is not None
    newest: GpsPing | None = None
    if state is not None:
        last_seq, last_ts, last_lat, last_lon = (
            state["seq"],
            datetime.fromisoformat(state["ts"]),
            state["lat"],
            state["lon"],
        )
    for p in sorted(pings, key=_SEQ):
        acc = p.accuracy_m
        if acc is not None and acc > max_acc:
            bad.append((p, "low_accuracy", f"accuracy {acc:.0f} m > {max_acc:.0f} m"))
            continue
        seq, ts = p.seq, p.ts
        if have_last:
            if seq == last_seq or ts == last_ts:
                bad.append((p, "duplicate", f"seq {seq} / ts {ts.isoformat()} already accepted"))
                continue
            if seq < last_seq or ts < last_ts:
                bad.append((p, "out_of_order", f"older than last accepted seq {last_seq}"))
                continue
            dt = (ts - last_ts).total_seconds()
            dist = haversine_m(last_lat, last_lon, p.lat, p.lon)
            if dist / dt > max_speed:
                bad.append((p, "impossible_jump", f"{dist:.0f} m in {dt:.1f} s = {dist / dt:.0f} m/s"))
                continue
        good.append(p)
        have_last, last_seq, last_ts, last_lat, last_lon, newest = True, seq, ts, p.lat, p.lon, p
    if newest is None:
        return good, bad, state
    return good, bad, {"seq": newest.seq, "ts": newest.ts.isoformat(), "lat": newest.lat, "lon": newest.lon,
                       "speed_mps": newest.speed_mps, "heading_deg": newest.heading_deg}  # fmt: skip


@dataclass(frozen=True)
class FenceChange:
    kind: str  # enter | exit | dwell | cross
    zone_id: str
    ping: GpsPing
    dwell_s: float | None = None


def fence_changes(
    inside: dict[str, dict[str, Any]],
    ping: GpsPing,
    index: ZoneIndex,
    default_dwell_s: float,
    previous: tuple[float, float] | None = None,
    accuracy_cap_m: float = 50.0,
) -> list[FenceChange]:
    """Compare the zones containing ``ping`` with ``inside`` (zone → entered_at, dwelled), updating it.

    Tile38's semantics, plus two of our own:

    - **Hysteresis by accuracy.** A fix whose accuracy circle (``accuracy_m``, at most
      ``accuracy_cap_m``) straddles a zone's edge changes nothing: it neither enters nor
      exits, so a driver waiting at the edge does not flap in and out with GPS jitter.
      Only a change is checked: a fix whose side agrees with the state costs no distance.
    - **cross**, for a zone that asks for it: the segment from the ``previous`` fix (lat, lon)
      to this one passes through the zone, and neither fix is in it (sparse fixes, a
      zone smaller than the distance between two).

    A zone that disappeared from the index counts as exited, so a deleted zone does
    not keep drivers "inside" forever. Events of kinds a zone does not ``detect`` are
    left out; its state is kept all the same.
    """
    lat, lon = ping.lat, ping.lon
    margin = min(ping.accuracy_m or 0.0, accuracy_cap_m)
    was_in = set(inside)
    now_in: dict[str, Zone] = {}
    sure, near = index.lookup(lat, lon)  # near: the zones whose edge runs through the fix's cell
    for z in chain(sure, (z for z in near if z.contains(lat, lon))):
        if z.zone_id in inside or not margin or z.boundary_m(lat, lon) >= margin:
            now_in[z.zone_id] = z
    out: list[FenceChange] = []
    for zid in list(inside):
        if zid in now_in:
            continue
        zone = index.zones.get(zid)
        if zone is not None and margin and zone.boundary_m(lat, lon) < margin:
            continue  # outside, but not surely: still inside
        del inside[zid]
        if zone is None or "exit" in zone.detect:
            out.append(FenceChange("exit", zid, ping))
    t = ping.ts.timestamp()
    for zid, zone in now_in.items():
        rec = inside.get(zid)
        if rec is not None and rec["dwelled"]:
            continue  # the common case of a driver inside many zones: one lookup, one flag
        limit = zone.dwell_s if zone.dwell_s is not None else default_dwell_s
        if rec is None:
            inside[zid] = {"entered_at": ping.ts.isoformat(), "dwelled": False, "due": t + limit}
            if "enter" in zone.detect:
                out.append(FenceChange("enter", zid, ping))
            continue
        # The dwell deadline as an epoch: a float compare per zone a driver is in, not a date parse.
        due = rec.get("due")
        if due is None:  # a state from before deadlines were kept
            due = rec["due"] = datetime.fromisoformat(rec["entered_at"]).timestamp() + limit
        if t >= due:
            rec["dwelled"] = True
            if "dwell" in zone.detect:
                out.append(FenceChange("dwell", zid, ping, t - (due - limit)))
    if previous is not None and index.cross:
        for zone in index.crossed(previous, (lat, lon)):
            if zone.zone_id not in inside and zone.zone_id not in was_in:
                out.append(FenceChange("cross", zone.zone_id, ping))
    return out
