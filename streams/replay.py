"""Remembering what a record produced, so a replay after a crash re-emits it.

A Faust table write (changelog) and the agent's output records are separate Kafka
writes. After a SIGKILL the changelog may hold the new state while the output was
never delivered; the source record is then replayed (its offset was not committed)
against state that already includes it. A filter would see its own earlier decision
("duplicate") and drop the pings for good. So each keyed state keeps, for its last
few source records (topic, partition, offset), what they produced; a replayed record
re-emits exactly that, and downstream dedupes by event id.

That memory is kept for a few records only, and prunes below the committed offset, so a
replay can reach further back than it (a catch-up burst of one key's records before a
commit, a commit that did not happen before a kill). Each state therefore also keeps the
highest source offset it took per partition (``hw``): a record at or below it was processed
already, whatever the memory still holds, and is never judged again as if new.
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


SEQ_SPAN = 4096  # seqs an accepted-seq window covers: over an hour of one phone's fixes
MAX_MISSING = 256  # rejected seqs a window lists before it gives up its oldest ones


def window_add(packed: list[Any], seqs: list[int], span: int = SEQ_SPAN, max_missing: int = MAX_MISSING) -> list[Any]:
    """``packed`` (a ``seq_set``) with ``seqs`` added, covering at most the last ``span`` seqs.

    What a key accepted, in a bounded form: a replay older than the per-record memory
    re-emits exactly its pings that were accepted the first time. Seqs below the window are
    not recorded (they read as not accepted).
    """
    if not seqs:
        return packed
    new = set(seqs)
    top = max(new)
    if packed:
        lo, hi, missing = int(packed[0]), int(packed[1]), [int(m) for m in packed[2] if int(m) not in new]
    else:
        lo, hi, missing = min(new), min(new) - 1, []
    if top > hi:
        missing.extend(s for s in range(max(hi + 1, top - span + 1), top + 1) if s not in new)
        hi = top
    lo = max(lo, hi - span + 1)
    missing = [m for m in missing if m >= lo]
    if len(missing) > max_missing:
        lo, missing = missing[-max_missing - 1] + 1, missing[-max_missing:]
    return [lo, hi, missing]


def window_has(packed: list[Any], seq: int) -> bool:
    return bool(packed) and int(packed[0]) <= seq <= int(packed[1]) and seq not in {int(m) for m in packed[2]}


def _ref(source: tuple[str, int, int]) -> list[object]:
    return [f"{source[0]}:{source[1]}", source[2]]


def produced_before(state: dict[str, Any] | None, source: tuple[str, int, int]) -> Any | None:
    ref = _ref(source)
    for p, o, out in (state or {}).get("recent", []):
        if p == ref[0] and o == ref[1]:
            return out
    return None


def seen_before(state: dict[str, Any] | None, source: tuple[str, int, int]) -> bool:
    """Whether ``source`` is at or below the last offset this state took on its partition."""
    top = ((state or {}).get("hw") or {}).get(f"{source[0]}:{source[1]}")
    return top is not None and source[2] <= int(top)


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
    hw = dict(state.get("hw") or {})
    hw[ref[0]] = max(int(hw.get(ref[0], -1)), source[2])
    state["hw"] = hw
    return state
