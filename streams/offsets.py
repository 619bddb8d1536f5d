"""Which offset a partition may commit: never past a record that was not acknowledged.

Faust 0.15 commits the end of the first run of acknowledged offsets unless that run starts
*more than one* past the committed offset (faust-streaming/faust#606, fix unreleased). A
single record at the head that is still being processed, or that its fetcher dropped
during a rebalance, was committed over and never read again: the repeated-crash test lost
its pings exactly that way (one driver short by whole records). Here the run must start at
the committed offset. Offsets the fetcher saw missing from the log (compaction,
transaction markers; Faust's gap tree) still count as acknowledged, as in Faust.
"""

from __future__ import annotations

from typing import Any, cast

from faust.transport.consumer import Consumer
from faust.types import TP, ConsumerT, Message
from intervaltree import IntervalTree


def committed_offsets(consumer: ConsumerT) -> dict[TP, int]:
    """The group's committed offset per partition: Faust keeps it only on its consumer, privately."""
    return cast(dict[TP, int], cast(Any, consumer)._committed_offset)


def acked_offsets(consumer: ConsumerT) -> dict[TP, list[int]]:
    """Offsets acknowledged and not yet committed, per partition (Faust's private bookkeeping)."""
    return cast(dict[TP, list[int]], cast(Any, consumer)._acked)


def unacked_messages(consumer: ConsumerT) -> set[Message]:
    """Records delivered to agents and not yet acknowledged."""
    return cast(set[Message], cast(Any, consumer)._unacked_messages)


def committable(acked: list[int], committed: int | None, gaps: IntervalTree) -> int | None:
    """The offset to commit next (one past the last record of the head run), or None.

    ``acked`` is sorted in place and the head run removed from it, as Faust's bookkeeping
    expects; ``gaps`` loses the ranges folded into ``acked``.
    """
    if not acked:
        return None
    if gaps:
        top = max(acked)
        missing = sorted(gaps.overlap(0, top), key=lambda iv: iv.begin)
        if missing:
            fill = [o for iv in missing for o in range(iv.begin, iv.end)]
            acked.extend(fill)
            gaps.chop(0, max(fill[-1], top + 1))
    acked.sort()
    if committed is not None and acked[0] > committed:
        return None  # the record at the committed offset was not acknowledged: wait for it
    end = 0
    while end + 1 < len(acked) and acked[end + 1] <= acked[end] + 1:
        end += 1
    last = acked[end]
    del acked[: end + 1]
    return last + 1


def _new_offset(self: Any, tp: TP) -> int | None:
    acked = self._acked[tp]
    before = list(acked)
    offset = committable(acked, self._committed_offset[tp], self._gap[tp])
    if offset is not None:
        self._acked_index[tp].difference_update(o for o in before if o < offset)
    return offset


def install() -> None:
    """Make every Faust consumer in this process commit strictly (the worker calls this once)."""
    cast(Any, Consumer)._new_offset = _new_offset
