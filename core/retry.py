"""Connecting to a backing service that may not be up yet, without stopping the process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def until_connected(what: str, attempt: Callable[[], Awaitable[None]], first: float = 0.5,
                          cap: float = 10.0) -> None:  # fmt: skip
    """Call ``attempt`` until it returns, doubling the pause after each failure (capped)."""
    delay = first
    while True:
        try:
            await attempt()
            return
        except Exception as exc:
            log.warning("%s not connected yet (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
