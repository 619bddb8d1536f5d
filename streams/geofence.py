"""Geofences: enter, exit and dwell events per driver and zone (``geofence.events``).

Zones are created through the API and stored in MongoDB; the API adds each change to the
Redis stream ``zones:changes``, and each worker applies the new entries every second, a
zone at a time (:class:`Zones`). A step of the telemetry agent (``streams.pipeline``). The per-driver
set of zones it is inside lives in a changelog-backed table, so a restart neither
re-emits enters nor forgets exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, cast

from schemas import GeofenceEvent, deterministic_event_id
from schemas.contracts import GEOFENCE_EVENTS, ZONE_CHANGES_KEY
from streams import pipeline, resources
from streams.app import Runtime
from streams.geo import Zone, ZoneIndex
from streams.metrics import PINGS
from streams.replay import produced_before, remember, seen_before
from streams.rules import fence_changes

log = logging.getLogger(__name__)


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Zones:
    """The worker's zone index and the last ``zones:changes`` entry applied to it.

    Started from every zone in MongoDB (the index built in a thread, off the event loop),
    then kept current a change at a time: each new entry's zone is read by ``_id`` and put
    into the index or taken out of it, so a change under load costs that zone's cells, and
    processing does not pause for a rebuild. Only a worker whose last entry was trimmed from
    the stream (``ZONE_CHANGES_MAXLEN`` changes behind) loads everything again.
    """

    def __init__(self, redis: Any = None, db: Any = None) -> None:
        self.index = ZoneIndex()
        self.cursor: str | None = None  # None: not loaded yet
        self.follows = True
        self._redis, self._db = redis, db  # None: the worker's (``streams.resources``)

    def redis(self) -> Any:
        return self._redis if self._redis is not None else resources.redis()

    def db(self) -> Any:
        return self._db if self._db is not None else resources.db()

    @property
    def loaded(self) -> bool:
        return self.cursor is not None

    @classmethod
    def fixed(cls, zones: Iterable[Zone]) -> Zones:
        """An index that never reloads (the step's tests, in memory)."""
        z = cls()
        z.index, z.cursor, z.follows = ZoneIndex(zones), "fixed", False
        return z

    async def refresh(self) -> None:
        if not self.follows:
            return
        r = self.redis()
        if self.cursor is None or await self._fell_behind(r):
            await self.load_all()
            return
        while True:
            entries = cast(list[tuple[str, dict[str, str]]],
                           await r.xrange(ZONE_CHANGES_KEY, min=f"({self.cursor}", count=500))  # fmt: skip
            if not entries:
                return
            await self.apply([fields.get("zone", "") for _, fields in entries])
            self.cursor = entries[-1][0]

    async def apply(self, zone_ids: list[str]) -> None:
        """Put each zone's current version into the index, or take out one that is gone."""
        ids = [i for i in dict.fromkeys(zone_ids) if i]
        docs = await asyncio.gather(*(self.db().zones.find_one({"_id": i}) for i in ids))
        for zone_id, doc in zip(ids, docs, strict=True):
            if doc is None:
                self.index.remove(zone_id)
            else:
                self.index.put(Zone.from_doc(doc))
        log.info("applied %d zone changes (%d zones)", len(ids), len(self.index.zones))

    async def load_all(self) -> None:
        r = self.redis()
        last = cast(list[tuple[str, dict[str, str]]], await r.xrevrange(ZONE_CHANGES_KEY, count=1))
        cursor = last[0][0] if last else "0-0"  # read before the zones: a change meanwhile is applied again
        docs = [d async for d in self.db().zones.find({})]
        self.index = await asyncio.to_thread(ZoneIndex, [Zone.from_doc(d) for d in docs])
        self.cursor = cursor
        log.info("loaded %d zones (changes up to %s)", len(docs), cursor)

    async def _fell_behind(self, r: Any) -> bool:
        """The entry after ours may have been trimmed: the stream's oldest is newer than our last."""
        if self.cursor in (None, "0-0", "fixed"):
            return False
        first = await r.xrange(ZONE_CHANGES_KEY, count=1)
        return bool(first) and _stream_id(first[0][0]) > _stream_id(str(self.cursor))


def step(rt: Runtime, given: Zones | None = None) -> pipeline.StepFactory:
    """Enter, exit and dwell per driver and zone; the zone index follows ``zones:changes`` every second.

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
        if not zones.loaded:
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
