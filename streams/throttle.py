"""Per-key rate limiting for fan-out and persistence that may lag behind live state."""

from __future__ import annotations

import random


class Throttle:
    """At most one pass per key per interval; memory bounded by ``max_keys``.

    With ``jitter`` (a fraction of the interval) each key's next pass is drawn from
    ``interval * (1 ± jitter)``: keys that started together (every driver after a
    restart, every simulated device of a benchmark) drift apart instead of all passing
    in the same instant each interval. Without it, the store's 30 s driver-state rewrite
    of 500 drivers was one burst that held FerretDB near half a core for ~5 s.
    """

    def __init__(self, interval_s: float, max_keys: int = 1_000_000, jitter: float = 0.0) -> None:
        if not 0.0 <= jitter < 1.0:
            raise ValueError("jitter is a fraction of the interval in [0, 1)")
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.jitter = jitter
        self.next: dict[str, float] = {}
        self._uniform = random.Random().uniform

    def allow(self, key: str, now: float) -> bool:
        if now < self.next.get(key, -1e18):
            return False
        if len(self.next) >= self.max_keys:
            self.next.clear()
        wait = self.interval_s
        if self.jitter:
            wait *= self._uniform(1.0 - self.jitter, 1.0 + self.jitter)
        self.next[key] = now + wait
        return True
