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
from typing import Any

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


def track_bucket(driver_id: str, pings: Sequence[GpsPing]) -> dict[str, Any]:
    """The stored document for one cleaned batch (``pings`` in seq order); ``_id`` makes a replay a no-op."""
    return {
        "_id": f"{driver_id}:{pings[0].seq}",
        "driver_id": driver_id,
        "first_seq": pings[0].seq,
        "last_seq": pings[-1].seq,
        "t0": pings[0].ts,
        "t1": pings[-1].ts,
        "n": len(pings),
        "fmt": BUCKET_FORMAT,
        "pings": pack_pings(pings),
    }


def bucket_pings(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc.get("fmt") != BUCKET_FORMAT:
        raise ValueError(f"unknown track bucket format {doc.get('fmt')!r} in {doc.get('_id')!r}")
    return unpack_pings(bytes(doc["pings"]))
