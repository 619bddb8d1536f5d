"""Geofences: enter, exit and dwell events per driver and zone (``geofence.events``).

Zones are created through the API and stored in MongoDB; the API bumps the Redis key
``zones:version`` on every change, each worker polls that key every second and reloads
only when it moved. A step of the telemetry agent (``streams.pipeline``). The per-driver
set of zones it is inside lives in a changelog-backed table, so a restart neither
re-emits enters nor forgets exits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import cast

from schemas import GeofenceEvent, deterministic_event_id
from schemas.contracts import GEOFENCE_EVENTS, ZONES_VERSION_KEY
from streams import pipeline, resources
from streams.app import Runtime
from streams.geo import Zone, ZoneIndex
from streams.metrics import PINGS
from streams.replay import produced_before, remember, seen_before
from streams.rules import fence_changes

log = logging.getLogger(__name__)


class Zones:
    """The worker's zone index and the version it was loaded at."""

    def __init__(self) -> None:
        self.index = ZoneIndex()
        self.version: str | None = "unloaded"
        self.follows = True  # reloads when zones:version changes

    @classmethod
    def fixed(cls, zones: Iterable[Zone]) -> Zones:
        """An index that never reloads (the step's tests, in memory)."""
        z = cls()
        z.index, z.version, z.follows = ZoneIndex(zones), "fixed", False
        return z

    async def refresh(self) -> None:
        if not self.follows:
            return
        version = cast(str | None, await resources.redis().get(ZONES_VERSION_KEY))
        if version == self.version:
            return
        docs = [d async for d in resources.db().zones.find({})]
        self.index = ZoneIndex(Zone.from_doc(d) for d in docs)
        self.version = version
        log.info("loaded %d zones (version %s)", len(docs), version)


def step(rt: Runtime, given: Zones | None = None) -> pipeline.StepFactory:
    """Enter, exit and dwell per driver and zone; the zone index follows ``zones:version`` every second.

    ``given``: a zone index instead of MongoDB's (``Zones.fixed``, for the step run in memory).
    """
    geofence_topic = rt.topic(GEOFENCE_EVENTS)
    inside_table = rt.table(
        "geofence-inside",
        use_partitioner=True,  # written from batches: the key's partition is its source record's
    )
    zones = given or Zones()
    default_dwell = rt.settings.default_dwell_s
    accuracy_cap = rt.settings.fence_accuracy_cap_m

    @rt.app.timer(interval=1.0, name="streams.geofence.refresh_zones")
    async def refresh_zones() -> None:
        try:
            await zones.refresh()
        except Exception as exc:  # keep the last good index; try again next tick
            log.warning("zone refresh failed: %s", exc)

    async def make() -> pipeline.Step:
        if zones.version == "unloaded":
            await zones.refresh()
        return detect_fences

    async def detect_fences(items: list[pipeline.Item]) -> None:
        index = zones.index
        for item in items:
            batch = item.batch
            key = batch.driver_id.encode()
            before = inside_table.get(key) or {}
            replayed = produced_before(before, item.source)
            if replayed is not None:
                changes = [(kind, zid, seq, dwell) for kind, zid, seq, dwell in replayed]
            elif seen_before(before, item.source):
                # Taken before the last fence change, its memory pruned: its events went out then.
                # Judged against today's state it would invent an exit and an entry.
                continue
            else:
                if not before.get("inside") and not index.zones:
                    continue
                PINGS.labels("geofence").inc(len(batch.pings))
                inside = {k: dict(v) for k, v in before.get("inside", {}).items()}
                # The previous fix, for zones that detect cross (kept only while some zone does).
                prev = before.get("last") if index.cross else None
                found = []
                for p in batch.pings:
                    found += fence_changes(inside, p, index, default_dwell, prev, accuracy_cap)
                    prev = (p.lat, p.lon)
                changes = [(c.kind, c.zone_id, c.ping.seq, c.dwell_s) for c in found]
                last = [prev[0], prev[1]] if index.cross and prev is not None else None
            by_seq = {p.seq: p for p in batch.pings}
            for kind, zone_id, seq, dwell in changes:
                ping = by_seq[seq]
                zone = index.zones.get(zone_id)
                await geofence_topic.send(
                    key=key,
                    value=GeofenceEvent(
                        event_id=deterministic_event_id("fence", batch.driver_id, zone_id, kind, seq),
                        type=f"geofence.{kind}",
                        driver_id=batch.driver_id,
                        zone_id=zone_id,
                        zone_name=zone.name if zone else zone_id,
                        lat=ping.lat,
                        lon=ping.lon,
                        at=ping.ts,
                        dwell_s=dwell,
                    ),
                )
            if replayed is None and (changes or inside != before.get("inside", {}) or last != before.get("last")):
                changed = [list(c) for c in changes]
                inside_table[key] = remember({**before, "inside": inside, "last": last}, item.source, changed,
                                             rt.committed(item.source))  # fmt: skip

    return make
