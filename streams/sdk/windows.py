"""Tumbling and hopping windows per key, kept in an agent's keyed state (JSON, changelog-backed).

Event time decides: a window closes when a value for its key arrives at or past the
window's end, so a replayed or late-flushed stream closes the same windows with the same
contents. A value older than the oldest open window is counted in ``late`` and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Closed:
    """A window that closed: its bounds (UTC) and what it accumulated."""

    start: datetime
    end: datetime
    value: Any


@dataclass(frozen=True)
class Hopping:
    """Windows of ``size_s`` starting every ``step_s`` (overlapping when ``step_s < size_s``)."""

    size_s: float
    step_s: float

    def __post_init__(self) -> None:
        if self.size_s <= 0 or self.step_s <= 0 or self.step_s > self.size_s:
            raise ValueError("a window needs 0 < step_s <= size_s")

    def starts(self, t: float) -> list[float]:
        """The starts of every window that contains instant ``t`` (epoch seconds)."""
        last = (t // self.step_s) * self.step_s
        out = []
        s = last
        while s > t - self.size_s:
            out.append(s)
            s -= self.step_s
        return sorted(out)


def Tumbling(size_s: float) -> Hopping:
    """Back-to-back windows of ``size_s``: each instant is in exactly one."""
    return Hopping(size_s, size_s)


class WindowState:
    """One named window of one key: add values by event time, get back the windows that closed.

    The key's watermark is the latest event time it has seen: a window closes once the
    watermark reaches its end, and a value for a window already closed is late.
    """

    def __init__(self, store: dict[str, Any], window: Hopping, reduce: Callable[[Any, Any], Any], initial: Any):
        self.store = store  # {"open": {start: acc}, "watermark": t, "late": n}: inside the key's state
        self.window = window
        self.reduce = reduce
        self.initial = initial

    def add(self, at: datetime, value: Any) -> list[Closed]:
        """Count ``value`` at event time ``at``; the windows this closed, oldest first."""
        t = at.timestamp()
        opened: dict[str, Any] = self.store.setdefault("open", {})
        watermark = max(float(self.store.get("watermark", t)), t)
        self.store["watermark"] = watermark
        size = self.window.size_s
        counted = False
        for s in self.window.starts(t):
            if s + size > watermark:
                k = repr(s)
                opened[k] = self.reduce(opened.get(k, self.initial), value)
                counted = True
        if not counted:
            self.store["late"] = self.late + 1
        out = []
        for k in sorted(opened, key=float):
            start = float(k)
            if start + size <= watermark:
                out.append(Closed(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(start + size, UTC),
                                  opened.pop(k)))  # fmt: skip
        return out

    @property
    def late(self) -> int:
        """Values dropped because every window they belonged to had closed."""
        return int(self.store.get("late", 0))
