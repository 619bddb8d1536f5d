"""Poison records versus broken servers: the first is dead-lettered, the second stops the step.

A step that raises on a batch is either given data it cannot handle (our own bug on an odd
record, or a server refusing that record's data, as Redis refuses a latitude beyond its
geo range) or talking to a server that is down. Only the second is worth stopping for:
retrying data never makes it valid, and stopping the worker for it stops every driver.
:func:`transient` tells the two apart by the exception; :func:`isolate` runs a failed
batch again one item at a time, so the items that fail alone are dead-lettered and the
rest are processed. Steps are replay-safe (a crash replays a batch anyway), so running an
item a second time changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from aiokafka.errors import KafkaError
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

#: Redis answers these when it is not able to serve right now, not because of the data.
_REDIS_BUSY = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOSCRIPT")


class ServerUnavailable(Exception):
    """A server stayed unreachable past the retry budget: the worker stops (crash-only)."""


def transient(exc: BaseException) -> bool:
    """True when ``exc`` says a server is unreachable or overloaded, not that the data is bad."""
    if isinstance(exc, ResponseError):
        return str(exc).startswith(_REDIS_BUSY)
    if isinstance(exc, RuntimeError) and not isinstance(exc, ChannelInvalidStateError):
        return "connection" in str(exc).lower() or "channel" in str(exc).lower()  # aio-pika while reconnecting
    return isinstance(
        exc,
        RedisConnectionError | RedisTimeoutError | ConnectionError | OSError | TimeoutError | KafkaError
        | AMQPError | ChannelInvalidStateError | AutoReconnect | ConnectionFailure | NetworkTimeout
        | ServerUnavailable,
    )  # fmt: skip


async def retrying(run: Callable[[], Awaitable[None]], budget_s: float, what: str) -> None:
    """``run`` until it does not fail transiently; past ``budget_s`` of failures, ServerUnavailable.

    A restarted Redis or RabbitMQ is back within seconds: the step waits for it (back-pressure,
    nothing acked meanwhile) instead of crashing the worker, which would replay and rebuild.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    delay = 0.05
    while True:
        try:
            await run()
            return
        except Exception as exc:
            if not transient(exc):
                raise
            if loop.time() + delay > deadline:
                raise ServerUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def isolate(
    items: Sequence[T],
    run: Callable[[Sequence[T]], Awaitable[None]],
    dead_letter: Callable[[T, BaseException], Awaitable[None]],
    budget_s: float,
    what: str,
) -> int:
    """Run ``items``; if the batch fails on its data, each item alone, dead-lettering those that fail.

    Returns how many items were dead-lettered. Transient failures are retried within
    ``budget_s`` and then raised, for the whole batch or any single item.
    """
    try:
        await retrying(lambda: run(items), budget_s, what)
        return 0
    except ServerUnavailable:
        raise
    except Exception as exc:
        if len(items) == 1:
            await dead_letter(items[0], exc)
            return 1
    poisoned = 0
    for item in items:
        try:
            await retrying(lambda item=item: run([item]), budget_s, what)  # type: ignore[misc]
        except ServerUnavailable:
            raise
        except Exception as exc:
            await dead_letter(item, exc)
            poisoned += 1
    return poisoned
