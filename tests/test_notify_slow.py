"""A socket that stops reading is dropped (1013), and the others get every message meanwhile."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
import threading
from collections.abc import Iterator

import aio_pika
import httpx
import orjson
import pytest
from websockets.sync.client import connect

from core.config import Settings
from schemas.contracts import EXCHANGE
from tests.conftest import Pipeline, wait_for

pytestmark = pytest.mark.usefixtures("stack")
PASSWORD = "correct horse battery"
MESSAGES = 10_000
BODY_PAD = "x" * 2000  # 10,000 x 2 KB: far more than a stalled socket's buffers (~4 MB) hold


@pytest.fixture(scope="module")
def api(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = Pipeline(
        stack,
        tmp_path_factory.mktemp("slow"),
        f"test-slow-{random.randrange(1 << 30)}",
        FLEETSTREAM_NOTIFY_QUEUE_SIZE="200",
        FLEETSTREAM_NOTIFY_SEND_TIMEOUT_S="2",
        FLEETSTREAM_LOGIN_MAX_ATTEMPTS_PER_ADDRESS="100000",
    )
    yield from p.running(worker=False)


def customer(api: Pipeline) -> tuple[str, str]:
    """(access token, subject) of a new customer."""
    email = f"slow.{random.randrange(1 << 40)}@example.com"
    with httpx.Client(base_url=api.url, timeout=20) as c:
        assert c.post("/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "S"}).status_code == 201
        token = c.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
        subject = c.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()["id"]
    return token, subject


async def publish(settings: Settings, keys: list[str]) -> None:
    conn = await aio_pika.connect_robust(settings.rabbitmq_dsn)
    try:
        channel = await conn.channel()
        ex = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        for i in range(MESSAGES):
            body = orjson.dumps({"type": "test.flood", "n": i, "pad": BODY_PAD})
            await asyncio.gather(*(ex.publish(aio_pika.Message(body), routing_key=k) for k in keys))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # ~1,000 messages/s: a reading client keeps up
    finally:
        await conn.close()


def stalled_socket(port: int, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads (a tiny receive buffer).

    Raw, because a client library keeps reading into its own memory in a background thread.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_stalled_socket_is_closed_and_does_not_delay_the_others(api: Pipeline, stack: Settings) -> None:
    (slow_token, slow_id), (fast_token, fast_id) = customer(api), customer(api)
    path = "/v1/notifications?token="
    slow = stalled_socket(api.api_port, path + slow_token)
    got: list[int] = []
    ready = threading.Event()

    def read_fast() -> None:
        with connect(api.url.replace("http", "ws", 1) + path + fast_token, open_timeout=20) as fast:
            ready.set()
            while len(got) < MESSAGES:
                msg = orjson.loads(fast.recv(timeout=60))
                if msg.get("type") == "test.flood":
                    got.append(msg["n"])

    reader = threading.Thread(target=read_fast)
    reader.start()
    assert ready.wait(20)
    asyncio.run(publish(stack, [f"customer.{slow_id}.flood", f"customer.{fast_id}.flood"]))
    reader.join(120)
    assert got == list(range(MESSAGES))  # every message, in order, while the other socket stalled
    # The stalled socket holds what the buffers took, and then the server ended the connection (its
    # close frame cannot get through a full buffer either); a timeout here means it kept the socket.
    slow.settimeout(30)
    data = bytearray()
    while chunk := slow.recv(1 << 20):
        data += chunk
    slow.close()
    assert 0 < len(data) < MESSAGES * len(BODY_PAD) // 2, len(data)

    def metrics() -> str:
        return httpx.get(f"{api.url}/metrics", headers=api.headers(api.admin), timeout=10).text

    assert "fleetstream_notify_dropped_total 1.0" in metrics()  # counted for operators
    assert wait_for(lambda: "fleetstream_notify_sockets 0.0" in metrics(), 10, 0.2)  # both gone, unbound


def test_a_message_arriving_after_a_greater_id_is_sent_once_and_not_replayed(api: Pipeline, stack: Settings) -> None:
    """A worker that took over a dead one's events publishes them with the ids they got first.

    Such a message reaches the socket after one with a greater id: it is sent (late), not
    taken for one already sent; a repeat of either is not sent again; and reconnecting with
    the greatest id received replays neither.
    """
    import redis
    from websockets.sync.client import connect as ws_connect

    from schemas.contracts import audience_key, customer_audience, replay_key

    token, subject = customer(api)
    scope = customer_audience(subject)
    r = redis.Redis.from_url(stack.redis_dsn, decode_responses=True)
    bodies = [{"type": "booking.test", "event_id": f"late-{i}-{random.randrange(1 << 30)}"} for i in range(2)]
    ids = [r.xadd(replay_key(scope), {"d": orjson.dumps(b).decode()}) for b in bodies]

    async def send(order: list[int]) -> None:
        """Messages in this order; -1 a live-only probe."""
        conn = await aio_pika.connect_robust(stack.rabbitmq_dsn)
        try:
            ex = await (await conn.channel()).declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            for i in order:
                body = orjson.dumps({"type": "probe"} if i < 0 else {**bodies[i], "id": ids[i]})
                await ex.publish(aio_pika.Message(body), routing_key=audience_key(scope, "booking.test"))
        finally:
            await conn.close()

    def subscribed(ws: object) -> bool:
        asyncio.run(send([-1]))
        try:
            return orjson.loads(ws.recv(timeout=0.3))["type"] == "probe"  # type: ignore[attr-defined]
        except TimeoutError:
            return False

    def received(ws: object, timeout: float) -> list[str]:
        got = []
        while True:
            try:
                msg = orjson.loads(ws.recv(timeout=timeout))  # type: ignore[attr-defined]
            except TimeoutError:
                return got
            if msg["type"] == "booking.test":
                got.append(msg["id"])

    ws_url = api.url.replace("http", "ws") + f"/v1/notifications?token={token}"
    with ws_connect(ws_url) as ws:
        assert wait_for(lambda: subscribed(ws), 10, 0.1)
        asyncio.run(send([1, 0, 1, 0]))  # the greater id first, then the late one, then both again
        assert received(ws, 2.0) == [ids[1], ids[0]]
    with ws_connect(ws_url + f"&after={ids[1]}") as ws:
        assert received(ws, 1.5) == []


def test_the_first_message_is_a_cursor_that_misses_nothing(api: Pipeline, stack: Settings) -> None:
    """A socket that received nothing yet still has a cursor: its first message, ``subscribed``.

    What was written for the customer while it was away is replayed from that cursor, and the
    ``subscribed`` after the replay carries the greatest id sent.
    """
    import redis
    from websockets.sync.client import connect as ws_connect

    from schemas.contracts import customer_audience, replay_key

    token, subject = customer(api)
    scope = customer_audience(subject)
    r = redis.Redis.from_url(stack.redis_dsn, decode_responses=True)
    ws_url = api.url.replace("http", "ws") + f"/v1/notifications?token={token}"
    before = r.xadd(replay_key(scope), {"d": orjson.dumps({"type": "booking.test", "event_id": "before"}).decode()})
    with ws_connect(ws_url) as ws:
        first = orjson.loads(ws.recv(timeout=10))
    assert first == {"type": "subscribed", "id": before}  # the stream's position when it subscribed
    missed = r.xadd(replay_key(scope), {"d": orjson.dumps({"type": "booking.test", "event_id": "away"}).decode()})
    with ws_connect(ws_url + f"&after={first['id']}") as ws:
        got = [orjson.loads(ws.recv(timeout=10)) for _ in range(2)]
    assert got == [{"type": "booking.test", "event_id": "away", "id": missed}, {"type": "subscribed", "id": missed}]
