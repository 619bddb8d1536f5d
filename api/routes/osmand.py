"""The OsmAnd protocol, for tracker apps as they ship: Traccar Client, GPSLogger, OsmAnd.

Those apps post one fix per HTTP request as query or form fields (``id``, ``lat``, ``lon``,
``timestamp``, ``speed`` in knots, ``bearing``, ``altitude``, ``accuracy``) to a server URL
the user types in, and let the user put nothing else anywhere. So the device token travels
in that URL's path: ``https://<host>/v1/osmand/<device token>``. Anyone who sees the URL
can post as that device; revoke it with ``DELETE /v1/devices/{token_id}`` and issue another.
nginx keeps no access log, so the token is not written to disk on our side.

A fix maps onto the same :class:`schemas.GpsPing` and the same ingest as ``POST
/v1/telemetry``. The apps send no sequence number; the fix's time in milliseconds is one
(a device's fixes are time-ordered, and a fix sent twice, as these apps do after a lost
answer, has the same time and is dropped as a duplicate downstream). ``id`` is the app's
own device identifier; the token, not ``id``, says which driver it is.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import ORJSONResponse

from api.deps import ResourcesDep
from api.ingest import IngestError, ingest
from api.models import Accepted
from api.responses import errors

router = APIRouter(prefix="/v1/osmand", tags=["telemetry"], responses=errors(401, 403))
KNOT_MPS = 1852 / 3600
#: Epoch numbers above this are milliseconds (OsmAnd sends those), below it seconds (Traccar Client).
_MS_THRESHOLD = 10**11


def _number(fields: dict[str, str], name: str) -> float | None:
    raw = fields.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite")
    return value


def _time(raw: str | None) -> datetime:
    if raw is None or raw == "":
        return datetime.now(UTC)  # GPSLogger can leave it out: the fix is now
    try:
        value = float(raw)
    except ValueError:
        try:
            ts = datetime.fromisoformat(raw.replace(" ", "+"))  # a '+' in a query string arrives as a space
        except ValueError:
            raise ValueError(f"timestamp must be epoch seconds, milliseconds or ISO 8601, got {raw[:40]!r}") from None
        if ts.tzinfo is None:
            raise ValueError("an ISO timestamp needs a timezone") from None
        return ts
    if not math.isfinite(value) or not 0 <= value < 10**14:
        raise ValueError("timestamp out of range")
    return datetime.fromtimestamp(value / 1000 if value >= _MS_THRESHOLD else value, UTC)


def to_ping(fields: dict[str, str], driver_id: str) -> dict[str, Any]:
    """The OsmAnd fields of one request as a ping for :mod:`api.ingest` (which validates it)."""
    lat, lon = _number(fields, "lat"), _number(fields, "lon")
    if lat is None or lon is None:
        raise ValueError("lat and lon are required")
    ts = _time(fields.get("timestamp"))
    speed = _number(fields, "speed")
    bearing = _number(fields, "bearing")
    if bearing is None:
        bearing = _number(fields, "heading")
    accuracy = _number(fields, "accuracy")
    ping: dict[str, Any] = {
        "driver_id": driver_id,
        "seq": int(ts.timestamp() * 1000),
        "ts": ts.isoformat(),
        "lat": lat,
        "lon": lon,
    }
    if speed is not None and speed >= 0:
        ping["speed_mps"] = speed * KNOT_MPS
    if bearing is not None and bearing >= 0:
        ping["heading_deg"] = bearing % 360.0
    if accuracy is not None and accuracy >= 0:
        ping["accuracy_m"] = accuracy
    return ping


async def _fields(request: Request) -> dict[str, str]:
    """Query fields, and those of a urlencoded form body (GPSLogger's POST), at most 8 KiB of it."""
    fields = dict(request.query_params)
    if request.method == "POST" and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > 8192:
                raise ValueError("form body larger than 8 KiB")
        try:
            pairs = parse_qsl(body.decode(), max_num_fields=64, strict_parsing=False)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"form body is not urlencoded: {exc}") from None
        fields.update(pairs)
    return fields


_INVALID: dict[int | str, dict[str, object]] = {422: {"description": "the fix is invalid, with the reason"}}


# GET (Traccar Client, OsmAnd) and POST (GPSLogger's form): one handler, an operation id each.
@router.post("/{token}", operation_id="osmand_post", status_code=200, response_model=Accepted, responses=_INVALID)
@router.get("/{token}", operation_id="osmand_get", status_code=200, response_model=Accepted, responses=_INVALID)
async def osmand(
    request: Request,
    res: ResourcesDep,
    token: Annotated[str, Path(max_length=256, description="the device token, as issued")],
    lat: float | None = None,
    lon: float | None = None,
    timestamp: str | None = None,
    speed: float | None = None,
    bearing: float | None = None,
    altitude: float | None = None,
    accuracy: float | None = None,
    id: str | None = None,
) -> ORJSONResponse:
    """One fix of a tracker app: 200 when accepted (these apps retry anything else), 422 with the reason.

    The query parameters are documented for clients; the same names are read from a form body.
    """
    principal = await res.auth.authenticate(token)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked device token in the URL")
    try:
        ping = to_ping(await _fields(request), principal.driver_id or "")
        result = await ingest([ping], principal, res.kafka, res.settings)
    except ValueError as exc:
        return ORJSONResponse({"detail": str(exc)}, status_code=422)
    except IngestError as exc:
        return ORJSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)
    if result.rejected:
        return ORJSONResponse(result.body(), status_code=422)
    return ORJSONResponse(result.body(), status_code=200)
