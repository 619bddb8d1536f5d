"""Track exports as GPX 1.1, KML 2.2 and CSV, written a page of pings at a time.

An export is a stream: a day of 1 Hz history is 86,400 pings, so the response is
produced page by page from the track reader and never held whole. Each format is a
header, a body per page and a footer; a KML page is one ``gx:Track`` of a
``gx:MultiTrack`` because a track lists all its times before its coordinates.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

ExportFormat = Literal["gpx", "kml", "csv"]

MEDIA_TYPES: dict[ExportFormat, str] = {
    "gpx": "application/gpx+xml",
    "kml": "application/vnd.google-earth.kml+xml",
    "csv": "text/csv",
}
CSV_FIELDS = ("seq", "ts", "lat", "lon", "accuracy_m", "speed_mps", "heading_deg")
_GPXTPX = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"  # speed and course, which GPX 1.1 lacks

Page = list[dict[str, Any]]


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def header(fmt: ExportFormat, driver_id: str) -> str:
    name = escape(driver_id)
    if fmt == "gpx":
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<gpx version="1.1" creator="Fleetstream" xmlns="http://www.topografix.com/GPX/1/1" '
                f'xmlns:gpxtpx="{_GPXTPX}">\n<trk><name>{name}</name><trkseg>\n')  # fmt: skip
    if fmt == "kml":
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<kml xmlns="http://www.opengis.net/kml/2.2" xmlns:gx="http://www.google.com/kml/ext/2.2">\n'
                f'<Document><name>{name}</name><Placemark><name>{name}</name>'
                '<gx:MultiTrack><gx:interpolate>1</gx:interpolate>\n')  # fmt: skip
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(CSV_FIELDS)
    return out.getvalue()


def body(fmt: ExportFormat, pings: Iterable[dict[str, Any]]) -> str:
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        for p in pings:
            w.writerow(["" if p.get(f) is None else (_iso(p[f]) if f == "ts" else p[f]) for f in CSV_FIELDS])
        return out.getvalue()
    if fmt == "gpx":
        parts = []
        for p in pings:
            ext = "".join(f"<gpxtpx:{tag}>{p[f]}</gpxtpx:{tag}>" for f, tag in
                          (("speed_mps", "speed"), ("heading_deg", "course")) if p.get(f) is not None)  # fmt: skip
            extensions = f"<extensions><gpxtpx:TrackPointExtension>{ext}</gpxtpx:TrackPointExtension></extensions>"
            parts.append(f'<trkpt lat={quoteattr(str(p["lat"]))} lon={quoteattr(str(p["lon"]))}>'
                         f'<time>{_iso(p["ts"])}</time>{extensions if ext else ""}</trkpt>\n')  # fmt: skip
        return "".join(parts)
    page = list(pings)
    if not page:
        return ""
    whens = "".join(f"<when>{_iso(p['ts'])}</when>" for p in page)
    coords = "".join(f"<gx:coord>{p['lon']} {p['lat']} 0</gx:coord>" for p in page)
    return f"<gx:Track>{whens}{coords}</gx:Track>\n"


def footer(fmt: ExportFormat) -> str:
    return {"gpx": "</trkseg></trk>\n</gpx>\n", "kml": "</gx:MultiTrack></Placemark></Document>\n</kml>\n",
            "csv": ""}[fmt]  # fmt: skip


async def stream(fmt: ExportFormat, driver_id: str, first: Page, page_size: int,
                 more: Callable[[int], Awaitable[Page]]) -> AsyncIterator[bytes]:  # fmt: skip
    """The export, one chunk per page: ``first`` is read before the response starts (so a failing
    server answers 503, not a cut 200); ``more(cursor)`` reads the page after ``cursor``."""
    yield header(fmt, driver_id).encode()
    page = first
    while page:
        yield body(fmt, page).encode()
        if len(page) < page_size:
            break
        page = await more(page[-1]["seq"])
    yield footer(fmt).encode()
