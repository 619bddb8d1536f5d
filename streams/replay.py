"""Remembering what a record produced, so a replay after a crash re-emits it.

A Faust table write (changelog) and the agent's output records are separate Kafka
writes. After a SIGKILL the changelog may hold the new state while the output was
never delivered; the source record is then replayed (its offset was not committed)
against state that already includes it. A filter would see its own earlier decision
("duplicate") and drop the pings for good. So each keyed state keeps, for its last
few source records (topic, partition, offset), what they produced; a replayed record
re-emits exactly that, and downstream dedupes by event id.
"""

from __future__ import annotations

from typing import Any

KEEP = 64  # far more records per key than can be in flight between two commits


def seq_set(seqs: list[int]) -> list[Any]:
    """Compact form of a set of sequence numbers: [first, last, [missing in between]]."""
    if not seqs:
        return []
    lo, hi = min(seqs), max(seqs)
    have = set(seqs)
    return [lo, hi, [s for s in range(lo, hi + 1) if s not in have]]


def seq_members(packed: list[Any]) -> set[int]:
    """The seqs of a packed set, as read back from a table (JSON: untyped)."""
    if not packed:
        return set()
    lo, hi, missing = packed
    return set(range(int(lo), int(hi) + 1)) - set(missing)


def _ref(source: tuple[str, int, int]) -> list[object]:
    return [f"{source[0]}:{source[1]}", source[2]]


def produced_before(state: dict[str, Any] | None, source: tuple[str, int, int]) -> Any | None:
    ref = _ref(source)
    for p, o, out in (state or {}).get("recent", []):
        if p == ref[0] and o == ref[1]:
            return out
    return None


def remember(
    state: dict[str, Any], source: tuple[str, int, int], output: Any, committed: int | None = None
) -> dict[str, Any]:
    """Add ``source``'s output; entries of its partition below the ``committed`` offset can never replay.

    Dropping those keeps the state (and its changelog record, written per source record)
    at one or two entries in steady state instead of ``KEEP``.
    """
    ref = _ref(source)
    floor = -1 if committed is None else committed
    recent = [r for r in state.get("recent", [])
              if not (r[0] == ref[0] and (r[1] == ref[1] or r[1] < floor))]  # fmt: skip
    recent.append([*ref, output])
    state["recent"] = recent[-KEEP:]
    return state
