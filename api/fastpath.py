"""``POST /v1/telemetry`` and the notification socket served before FastAPI's router, the rest passed on.

Nearly every request the API serves is a device's telemetry batch. Through the router, a
50-ping POST spent about a third of its CPU in routing, dependency solving and response
classes (py-spy on ``benchmarks/telemetry.py``). This pure ASGI middleware does for that
one route what the FastAPI route does (bearer auth, body limit, then the same
:func:`api.routes.telemetry.reply`), so answers are identical; the FastAPI route stays for
OpenAPI and for apps built without this middleware.

A notification socket lives for hours: through the router it kept FastAPI's exit stacks,
the dependency solver's and every middleware's frames alive as long (about 6 KiB of an
idle socket, tracemalloc at 3,000 sockets). :class:`NotificationsFastPath` hands the
socket straight to the same endpoint function.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from api.routes.notifications import notifications
from api.routes.telemetry import body_limit, reply
from api.security import bearer_token

PATH = "/v1/telemetry"
_JSON = (b"content-type", b"application/json")


class Disconnected(Exception):
    """The client went away before its body arrived."""


class TelemetryFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        res = scope["app"].state.resources
        authorization, length = "", 0
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = int(value) if value.isdigit() else 0
        principal = await res.auth.authenticate(bearer_token(authorization))
        if principal is None:
            await respond(send, 401, {"detail": "missing or invalid bearer token"}, {"WWW-Authenticate": "Bearer"})
            return
        limit = body_limit(res.settings)
        try:
            raw = await read_body(receive, length, limit)
        except Disconnected:
            return  # nothing was accepted, and nobody is left to tell
        if raw is None:
            await respond(send, 413, {"detail": f"body larger than {limit} bytes"})
            return
        code, body, headers = await reply(raw, principal, res)
        await respond(send, code, body, headers)


async def read_body(receive: Receive, length: int, limit: int) -> bytes | None:
    """The whole body, or None once it is (or says it will be) larger than ``limit``."""
    if length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    data = orjson.dumps(body)
    raw_headers = [_JSON, (b"content-length", str(len(data)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})


class NotificationsFastPath:
    """``/v1/notifications`` (a WebSocket) to its endpoint directly; everything else to the app."""

    PATH = "/v1/notifications"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or scope["path"] != self.PATH:
            await self.app(scope, receive, send)
            return
        await notifications(WebSocket(scope, receive, send))
