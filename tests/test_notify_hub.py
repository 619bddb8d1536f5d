"""The notification hub on the stack's RabbitMQ: many sockets subscribing at once, each bound when subscribed.

The hub's bindings go out in batches (``api.notify.Binder``); what a socket is promised is
that once ``subscribe`` returns, every message for its patterns reaches it, and that a
pattern no socket uses is unbound, while one wanted again stays bound.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import orjson
import pytest

from api.notify import NotificationHub, Subscriber
from core.config import Settings
from schemas.contracts import EXCHANGE, audience_key, audience_pattern, customer_audience

pytestmark = pytest.mark.usefixtures("stack")


async def _publish(settings: Settings, customers: list[str], tag: str) -> None:
    conn = await aio_pika.connect(settings.rabbitmq_dsn)
    try:
        ch = await conn.channel()
        ex = await ch.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        for c in customers:
            body = orjson.dumps({"type": "booking.update", "customer": c, "tag": tag})
            await ex.publish(aio_pika.Message(body), routing_key=audience_key(customer_audience(c), "booking.update"))
    finally:
        await conn.close()


async def _heard(subs: dict[str, Subscriber], tag: str, timeout: float = 30) -> dict[str, list[str]]:
    """Per customer, the customers named in the messages of ``tag`` its subscriber got."""
    got: dict[str, list[str]] = {c: [] for c in subs}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(not v for v in got.values()):
        for c, sub in subs.items():
            while sub.pending:
                body = orjson.loads(sub.pending.popleft().text)
                if body.get("tag") == tag:
                    got[c].append(body["customer"])
        await asyncio.sleep(0.05)
    return got


@pytest.mark.timeout(180)
async def test_sockets_subscribing_at_once_each_hear_their_own_from_the_moment_they_are_subscribed(
    stack: Settings, uid: str
) -> None:
    hub = NotificationHub(stack)
    hub.start()
    customers = [f"hub{i}-{uid}" for i in range(2000)]
    try:
        subs = await asyncio.gather(*(hub.subscribe([audience_pattern(customer_audience(c))], 10)
                                      for c in customers))  # fmt: skip
        by_customer = dict(zip(customers, subs, strict=True))
        await _publish(stack, customers, "first")  # right after subscribe returned: nothing may be missed
        assert await _heard(by_customer, "first") == {c: [c] for c in customers}

        # Half leave; a quarter of those come back before the binder is idle (stays bound).
        leaving, back = customers[:1000], customers[:250]
        for c in leaving:
            await hub.unsubscribe(by_customer.pop(c))
        again = await asyncio.gather(*(hub.subscribe([audience_pattern(customer_audience(c))], 10) for c in back))
        by_customer.update(zip(back, again, strict=True))
        want = {audience_pattern(customer_audience(c)) for c in by_customer}
        for _ in range(300):  # the unbinds go out one by one once no bind waits
            if hub._binder.bound == want:
                break
            await asyncio.sleep(0.2)
        assert hub._binder.bound == want  # the 750 unused patterns unbound, the rest bound
        await _publish(stack, customers, "second")
        heard = await _heard(by_customer, "second")
        assert heard == {c: [c] for c in by_customer}
    finally:
        await hub.stop()
