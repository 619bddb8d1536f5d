"""Driver devices post telemetry: HTTP batches and a WebSocket with per-batch acks."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect, status
from fastapi.responses import ORJSONResponse

from api.deps import PrincipalDep, ResourcesDep
from api.ingest import IngestError, extract_pings, ingest, parse_body
from api.models import Accepted
from api.resources import Resources
from api.responses import errors
from api.security import Principal
from core.config import Settings

router = APIRouter(prefix="/v1/telemetry", tags=["telemetry"], responses=errors(401, 403, 413))


@router.post("", status_code=202, response_model=Accepted,
             responses={413: {}, 422: {"model": Accepted, "description": "some pings refused, with the reasons"},
                        503: {}})  # fmt: skip
async def post_telemetry(request: Request, res: ResourcesDep, principal: PrincipalDep) -> ORJSONResponse:
    """Accept 1…N pings of the calling device's driver.

    202: all accepted. 422: some or all rejected, with per-ping reasons; the valid ones
    in the same batch *were* accepted (``accepted`` says how many). 413: too many pings.
    503 + Retry-After: Kafka did not acknowledge, nothing of this request was accepted.

    ``api.fastpath`` answers this route before the router sees it, with :func:`reply`
    too; this definition documents it and serves where that middleware is not installed.
    """
    limit = body_limit(res.settings)
    if int(request.headers.get("content-length") or 0) > limit:
        return ORJSONResponse({"detail": f"body larger than {limit} bytes"}, status_code=413)
    code, body, headers = await reply(await request.body(), principal, res)
    return ORJSONResponse(body, status_code=code, headers=headers)


def body_limit(settings: Settings) -> int:
    return settings.max_batch_pings * 1024


async def reply(raw: bytes, principal: Principal, res: Resources) -> tuple[int, Any, dict[str, str] | None]:
    """Status, JSON body and extra headers for one posted batch (HTTP route and fast path alike)."""
    try:
        pings = extract_pings(parse_body(raw), res.settings)
        result = await ingest(pings, principal, res.kafka, res.settings)
    except IngestError as exc:
        return exc.status, {"detail": exc.detail}, exc.headers
    return (422 if result.rejected else 202), result.body(), None


@router.websocket("/stream")
async def telemetry_stream(ws: WebSocket) -> None:
    """Messages ``{"batch_id": ..., "pings": [...]}``; each gets an ack with the same ``batch_id``.

    A device resends every batch it has no ack for after a reconnect; pings carry
    sequence numbers, so a batch that was in fact written twice is deduplicated downstream.
    """
    res = ws.app.state.resources
    token = ws.query_params.get("token") or ws.headers.get("authorization", "").removeprefix("Bearer ").strip()
    principal = await res.auth.authenticate(token)
    if principal is None:
        await ws.close(code=status.WS_1008_POLICY_VIOLATION, reason="missing or invalid token")
        return
    await ws.accept()
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            batch_id = None
            try:
                body = parse_body(msg.get("bytes") or (msg.get("text") or "").encode())
                batch_id = body.get("batch_id") if isinstance(body, dict) else None
                result = await ingest(extract_pings(body, res.settings), principal, res.kafka, res.settings)
                ack = {"batch_id": batch_id, "status": 422 if result.rejected else 202, **result.body()}
            except IngestError as exc:
                ack = {"batch_id": batch_id, "status": exc.status, "detail": exc.detail, "accepted": 0}
            await ws.send_text(orjson.dumps(ack).decode())
            if ack["status"] == 403:
                await ws.close(code=status.WS_1008_POLICY_VIOLATION, reason="forbidden")
                return
    except WebSocketDisconnect:
        return
