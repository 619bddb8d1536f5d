"""Pure telemetry rules (no I/O), unit-tested alone and used by the agents.

Modelled on traccar's position filters: duplicates, out-of-order, accuracy and
implied-speed jumps; and on tile38's fence semantics: enter, exit, and dwell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

from schemas import GpsPing
from streams.geo import ZoneIndex, haversine_m

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
    kind: str  # enter | exit | dwell
    zone_id: str
    ping: GpsPing
    dwell_s: float | None = None


def fence_changes(
    inside: dict[str, dict[str, Any]], ping: GpsPing, index: ZoneIndex, default_dwell_s: float
) -> list[FenceChange]:
    """Compare the zones containing ``ping`` with ``inside`` (zone → entered_at, dwelled), updating it.

    A zone that disappeared from the index counts as exited, so a deleted zone does
    not keep drivers "inside" forever.
    """
    now_in = {z.zone_id: z for z in index.containing(ping.lat, ping.lon)}
    out: list[FenceChange] = []
    for zid in list(inside):
        if zid not in now_in:
            del inside[zid]
            out.append(FenceChange("exit", zid, ping))
    for zid, zone in now_in.items():
        rec = inside.get(zid)
        if rec is None:
            inside[zid] = {"entered_at": ping.ts.isoformat(), "dwelled": False}
            out.append(FenceChange("enter", zid, ping))
            continue
        stayed = (ping.ts - datetime.fromisoformat(rec["entered_at"])).total_seconds()
        limit = zone.dwell_s if zone.dwell_s is not None else default_dwell_s
        if not rec["dwelled"] and stayed >= limit:
            rec["dwelled"] = True
            out.append(FenceChange("dwell", zid, ping, stayed))
    return out
