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

from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree


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
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
