"""Per-key rate limiting for fan-out and persistence that may lag behind live state."""

from __future__ import annotations


class Throttle:
    """At most one pass per key per interval; memory bounded by ``max_keys``."""

    def __init__(self, interval_s: float, max_keys: int = 1_000_000) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.last: dict[str, float] = {}

    def allow(self, key: str, now: float) -> bool:
        if now - self.last.get(key, -1e18) < self.interval_s:
            return False
        if len(self.last) >= self.max_keys:
            self.last.clear()
        self.last[key] = now
        return True
