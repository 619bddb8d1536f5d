"""Stored track buckets: the pings of one cleaned batch packed into one binary column.

MongoDB's own time-series collections keep buckets in a compressed columnar form for
the same reason: per-ping subdocuments are what makes history expensive to write.
On FerretDB v1 (SQLite) a 50-ping bucket cost 1.49 ms of server CPU as an array of
subdocuments and 0.17 ms packed (``benchmarks/results/ferretdb-buckets.txt``).

Layout (``fmt`` 1): per ping, little-endian ``seq`` int64, ``ts`` int64 microseconds
since the Unix epoch (UTC), ``lat``/``lon`` float64, ``accuracy_m``/``speed_mps``/
``heading_deg`` float32 with NaN for "not sent". Bucket metadata (driver, first/last
seq, t0/t1, n) stays in plain fields, so buckets are found with ordinary queries.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from operator import attrgetter
from typing import Any

import orjson

from schemas.telemetry import GpsPing

BUCKET_FORMAT = 1
_PING = struct.Struct("<qqddfff")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAN = float("nan")


_MICROSECOND = timedelta(microseconds=1)


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // _MICROSECOND  # exact integer arithmetic, in C


def pack_pings(pings: Sequence[GpsPing]) -> bytes:
    pack = _PING.pack
    return b"".join(
        pack(
            p.seq,
            _micros(p.ts),
            p.lat,
            p.lon,
            _NAN if p.accuracy_m is None else p.accuracy_m,
            _NAN if p.speed_mps is None else p.speed_mps,
            _NAN if p.heading_deg is None else p.heading_deg,
        )
        for p in pings
    )


def _opt(v: float) -> float | None:
    # float32 round trip: keep what a device can meaningfully send (about 7 digits).
    return None if math.isnan(v) else float(f"{v:.7g}")


def unpack_pings(data: bytes) -> list[dict[str, Any]]:
    """Pings of a bucket as plain dicts (the read API's shape), in stored order."""
    return [
        {
            "seq": seq,
            "ts": _EPOCH + timedelta(microseconds=us),
            "lat": lat,
            "lon": lon,
            "accuracy_m": _opt(acc),
            "speed_mps": _opt(spd),
            "heading_deg": _opt(hdg),
        }
        for seq, us, lat, lon, acc, spd, hdg in _PING.iter_unpack(data)
    ]


_SEQ = attrgetter("seq")


def track_bucket(driver_id: str, pings: Sequence[GpsPing]) -> dict[str, Any]:
    """The stored document for one cleaned batch, pings in seq order; ``_id`` makes a replay a no-op.

    Clean forwards a fully accepted device batch as the device sent it, which need not be
    in seq order (clean itself checks in seq order).
    """
    if any(a.seq >= b.seq for a, b in pairwise(pings)):
        pings = sorted(pings, key=_SEQ)
    first, last = pings[0], pings[-1]
    return _bucket(driver_id, first.seq, last.seq, first.ts, last.ts, len(pings), pack_pings(pings))


def _bucket(driver_id: str, first_seq: int, last_seq: int, t0: datetime, t1: datetime, n: int, packed: bytes
            ) -> dict[str, Any]:  # fmt: skip
    return {"_id": f"{driver_id}:{first_seq}", "driver_id": driver_id, "first_seq": first_seq, "last_seq": last_seq,
            "t0": t0, "t1": t1, "n": n, "fmt": BUCKET_FORMAT, "pings": packed}  # fmt: skip


def bucket_pings(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc.get("fmt") != BUCKET_FORMAT:
        raise ValueError(f"unknown track bucket format {doc.get('fmt')!r} in {doc.get('_id')!r}")
    return unpack_pings(bytes(doc["pings"]))


def bucket_from_record(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The bucket document and the last ping (a dict) of a ``telemetry.batch`` record, read without models.

    The history sink stores every ping; decoding each into a model and packing it from there
    was about 40 % of its CPU (py-spy). Records on ``telemetry.clean`` passed the schema when
    clean read them, so this reads their JSON with orjson and packs straight from it, taking
    only the shape our encoder writes (ISO timestamps with an offset, numbers as numbers,
    one driver, seq strictly increasing). Anything else gives None: the caller then
    decodes through the schema, which validates it or dead-letters it.
    ``tests/test_schemas.py`` checks both paths give the same document.
    """
    try:
        batch = orjson.loads(raw)
        if batch.get("type") != "telemetry.batch":
            return None
        driver = batch["driver_id"]
        pings = batch["pings"]
        pack = _PING.pack
        parse = datetime.fromisoformat
        parts: list[bytes] = []
        prev_seq, t0 = -1, None
        for p in pings:
            seq = p["seq"]
            ts = parse(p["ts"])
            if p["driver_id"] != driver or type(seq) is not int or seq <= prev_seq or ts.tzinfo is None:
                return None
            acc, spd, hdg = p.get("accuracy_m"), p.get("speed_mps"), p.get("heading_deg")
            parts.append(pack(seq, (ts - _EPOCH) // _MICROSECOND, p["lat"], p["lon"],
                              _NAN if acc is None else acc, _NAN if spd is None else spd,
                              _NAN if hdg is None else hdg))  # fmt: skip
            prev_seq, t0 = seq, t0 or ts
        if t0 is None:
            return None  # no pings
    except (ValueError, KeyError, TypeError, AttributeError, struct.error):  # JSON errors are ValueErrors
        return None
    first, last = pings[0], pings[-1]
    t1 = ts.astimezone(UTC)
    doc = _bucket(driver, first["seq"], last["seq"], t0.astimezone(UTC), t1, len(pings), b"".join(parts))
    return doc, {**last, "ts": t1}
