"""History buckets per driver, held open across records and flushed when full or old enough.

A phone posts one fix per request, so a bucket per record (what a device batch made) is a
MongoDB document per ping: at 2,000 phones FerretDB spent 804 core-µs per stored ping and
history fell three times behind. Here a driver's pings gather in one open bucket until it
holds ``max_pings`` or its first ping has waited ``max_age_s``; the bucket is then one
document (the MongoDB bucket pattern). A record is acknowledged only once every ping it
added is stored, so the committed offset never passes history that is only in memory.

Exactly once across restarts and hand-overs: pings arrive in seq order per driver (clean
drops the others), so a driver's stored history is everything up to the last seq of its
last flushed bucket (``flushed``, kept in a changelog-backed table by the store agent).
Pings at or below it, or below the open bucket's last, are replays and skipped. A bucket's
``_id`` is its driver and first seq, and a replay starts its bucket at the first ping after
``flushed``: if that flush's table entry was lost in a crash, the replay collides with the
stored document, and the store writes only what the stored one lacks (:func:`after` its last).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schemas.track import _EPOCH, _PING, BUCKET_FORMAT, _bucket

_SIZE = _PING.size


def _seq_at(packed: bytes, i: int) -> int:
    return int(struct.unpack_from("<q", packed, i * _SIZE)[0])


def _ts_at(packed: bytes, i: int) -> datetime:
    return _EPOCH + timedelta(microseconds=struct.unpack_from("<q", packed, i * _SIZE + 8)[0])


def after(doc: dict[str, Any], floor: int) -> dict[str, Any] | None:
    """The part of a bucket document with seq above ``floor`` (the whole one, or None if nothing is)."""
    if doc["first_seq"] > floor:
        return doc
    if doc["last_seq"] <= floor:
        return None
    packed = bytes(doc["pings"])
    n = len(packed) // _SIZE
    i = next(i for i in range(n) if _seq_at(packed, i) > floor)
    rest = packed[i * _SIZE :]
    return _bucket(doc["driver_id"], _seq_at(packed, i), doc["last_seq"], _ts_at(packed, i), doc["t1"], n - i, rest)


@dataclass(slots=True)
class OpenBucket:
    driver_id: str
    opened: float  # monotonic time of its first ping
    first_seq: int
    last_seq: int
    t0: datetime
    t1: datetime
    n: int = 0
    parts: list[bytes] = field(default_factory=list)
    tokens: list[Any] = field(default_factory=list)  # what to acknowledge once stored (Faust events)
    state: dict[str, Any] | None = None  # the driver's latest state, for the ``drivers`` document

    def doc(self) -> dict[str, Any]:
        return _bucket(self.driver_id, self.first_seq, self.last_seq, self.t0, self.t1, self.n, b"".join(self.parts))


class OpenBuckets:
    """Open buckets by driver, oldest first, and which of them to store now."""

    def __init__(self, max_pings: int, max_age_s: float) -> None:
        self.max_pings = max_pings
        self.max_age_s = max_age_s
        self.open: dict[str, OpenBucket] = {}  # insertion order is opening order
        self.full: list[OpenBucket] = []
        self.closing: dict[str, OpenBucket] = {}  # each driver's last full bucket not yet handed out

    def add(self, doc: dict[str, Any], state: dict[str, Any] | None, token: Any, flushed: int, now: float) -> bool:
        """Hold a record's bucket document; False if every ping of it is stored already (acknowledge it now).

        ``flushed`` is the driver's last stored seq. A record whose pings are held but not
        stored yet (a replay of one still open) is acknowledged with the bucket holding them.
        """
        if doc["fmt"] != BUCKET_FORMAT:  # ``after`` reads the packed pings
            raise ValueError(f"unknown bucket format {doc['fmt']!r}")
        driver = doc["driver_id"]
        held = self.open.get(driver) or self.closing.get(driver)
        fresh = after(doc, max(flushed, held.last_seq if held is not None else -1))
        if fresh is None:
            if doc["last_seq"] <= flushed or held is None:
                return False
            held.tokens.append(token)
            return True
        cur = self.open.get(driver)
        if cur is None:
            cur = self.open[driver] = OpenBucket(driver, now, fresh["first_seq"], fresh["last_seq"], fresh["t0"],
                                                 fresh["t1"])  # fmt: skip
        cur.parts.append(bytes(fresh["pings"]))
        cur.n += fresh["n"]
        cur.last_seq, cur.t1 = fresh["last_seq"], fresh["t1"]
        cur.tokens.append(token)
        if state is not None:
            cur.state = state
        if cur.n >= self.max_pings:
            self.full.append(self.open.pop(driver))
            self.closing[driver] = cur
        return True

    def due(self, now: float, everything: bool = False) -> list[OpenBucket]:
        """Buckets to store now: the full ones and those whose first ping waited ``max_age_s`` (or all)."""
        out, self.full = self.full, []
        self.closing.clear()
        horizon = float("inf") if everything else now - self.max_age_s
        while self.open:  # oldest first: stops at the first young one, so it costs what it flushes
            oldest = next(iter(self.open.values()))
            if oldest.opened > horizon:
                break
            out.append(self.open.pop(oldest.driver_id))
        return out
