"""Prometheus metrics of this API process, for the admin token or ``FLEETSTREAM_METRICS_TOKEN`` only.

Metrics name internal rates and sizes; the public port does not hand them to anyone
(nginx does not route ``/metrics`` at all). A scraper is given the metrics token.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ResourcesDep, bearer

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, res: ResourcesDep) -> Response:
    token = bearer(request)
    wanted = res.settings.metrics_token
    if token and wanted is not None and hmac.compare_digest(token, wanted.get_secret_value()):
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
    principal = await res.auth.authenticate(token)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "metrics need the metrics or admin token",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    if principal.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "metrics need the metrics or admin token")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
