"""Pure telemetry rules (no I/O), unit-tested alone and used by the agents.

Modelled on traccar's position filters: duplicates, out-of-order, accuracy and
implied-speed jumps; and on tile38's fence semantics: enter, exit, and dwell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas import GpsPing
from streams.geo import ZoneIndex, haversine_m


@dataclass(frozen=True)
class CleanLimits:
    max_accuracy_m: float
    max_speed_mps: float


def clean_pings(
    state: dict[str, Any] | None, pings: list[GpsPing], limits: CleanLimits
) -> tuple[list[GpsPing], list[tuple[GpsPing, str, str]], dict[str, Any] | None]:
    """Split a device batch into accepted pings and (ping, reason, detail) rejects.

    ``state`` is the last accepted ping of the driver (seq, ts, lat, lon) and is returned
    updated; comparing against the last *accepted* fix is what stops one bad jump from
    poisoning the next good fix.
    """
    good: list[GpsPing] = []
    bad: list[tuple[GpsPing, str, str]] = []
    last: GpsPing | None = None
    if state is not None:
        last = GpsPing.model_construct(
            driver_id="", seq=state["seq"], ts=datetime.fromisoformat(state["ts"]), lat=state["lat"], lon=state["lon"]
        )
    for p in sorted(pings, key=lambda x: x.seq):
        if p.accuracy_m is not None and p.accuracy_m > limits.max_accuracy_m:
            bad.append((p, "low_accuracy", f"accuracy {p.accuracy_m:.0f} m > {limits.max_accuracy_m:.0f} m"))
            continue
        if last is not None:
            if p.seq == last.seq or p.ts == last.ts:
                bad.append((p, "duplicate", f"seq {p.seq} / ts {p.ts.isoformat()} already accepted"))
                continue
            if p.seq < last.seq or p.ts < last.ts:
                bad.append((p, "out_of_order", f"older than last accepted seq {last.seq}"))
                continue
            dt = (p.ts - last.ts).total_seconds()
            dist = haversine_m(last.lat, last.lon, p.lat, p.lon)
            if dist / dt > limits.max_speed_mps:
                bad.append((p, "impossible_jump", f"{dist:.0f} m in {dt:.1f} s = {dist / dt:.0f} m/s"))
                continue
        good.append(p)
        last = p
    if last is None:
        return good, bad, None
    return good, bad, {"seq": last.seq, "ts": last.ts.isoformat(), "lat": last.lat, "lon": last.lon}


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
