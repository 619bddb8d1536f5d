"""A small keep-alive HTTP/1.1 client for the benchmarks' load generators.

The load generator shares the two cores with what it measures: posting 500 requests/s
of 50 pings, its process took 20 % of a core with aiohttp and 12 % with this client (body
building and sampling included). Devices do not run on the server, so the benchmark's own
cost is kept small: a request is written as one bytes object, and of the answer only the status
line and ``Content-Length`` are read. Enough for the JSON POSTs of the benchmarks;
no chunked bodies, no redirects, no TLS.
"""

from __future__ import annotations

import asyncio

_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


class Connection:
    """One keep-alive connection; reopened on the next request after an error or ``Connection: close``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._head = f" HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: ".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: bytes, body: bytes, headers: bytes = b"") -> int:
        """The response's status code; 0 when the connection failed (the request may or may not have been handled)."""
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            self.writer.write(b"".join((b"POST ", path, self._head, b"%d\r\n" % len(body), headers, b"\r\n", body)))
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await self.reader.readexactly(length)
        except _ERRORS:
            self.close()
            return 0
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Pool:
    """At most ``size`` connections shared by any number of senders."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self._all = [Connection(host, port) for _ in range(size)]
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        for conn in self._all:
            self._idle.put_nowait(conn)

    async def post(self, path: bytes, body: bytes, headers: bytes = b"") -> int:
        conn = await self._idle.get()
        try:
            return await conn.post(path, body, headers)
        finally:
            self._idle.put_nowait(conn)

    def close(self) -> None:
        for conn in self._all:
            conn.close()


def auth_header(token: str) -> bytes:
    return f"Authorization: Bearer {token}\r\n".encode()
