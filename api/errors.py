"""The outermost middleware: an exception ends one request, never the connection it came on.

uvicorn closes the connection of a request whose app raised (Starlette re-raises after its
500 page for the server to log), and nginx, holding that connection in its upstream
keep-alive pool, handed the next client's request to it: a 502 for somebody else. Here the
exception is logged and answered (503 with ``Retry-After`` when a backing server is
unreachable, else 500) and not re-raised, so the connection stays usable.
"""

from __future__ import annotations

import logging

import orjson
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streams.poison import transient

log = logging.getLogger(__name__)
UNHANDLED = Counter("fleetstream_api_unhandled_total", "Requests that ended in an exception", ["status"])


class ErrorBarrier:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            down = transient(exc)
            status = 503 if down else 500
            UNHANDLED.labels(str(status)).inc()
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:
                return  # the response is under way; the connection is uvicorn's to end
            detail = "a backing service is unavailable; retry later" if down else "internal error"
            body = orjson.dumps({"detail": detail})
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if down:
                headers.append((b"retry-after", b"5"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
