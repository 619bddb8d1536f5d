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

from collections.abc import Mapping
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


_commit_offsets = Consumer._commit_offsets


async def _commit_offsets_or_keep(self: Any, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
    """Commit; a commit Kafka refused leaves the committed offsets as they were.

    Faust records the offsets as committed even when the commit failed (Kafka refuses one
    from a group that already rebalanced), and the replay memories prune below the
    committed offset: records read again from the real one would no longer be known as
    replays, and the clean step would dead-letter acknowledged pings as ``out_of_order``.
    """
    before = {tp: self._committed_offset.get(tp) for tp in offsets}
    done = bool(await _commit_offsets(self, offsets, start_new_transaction))
    if not done:
        for tp, offset in before.items():
            if offset is None:
                self._committed_offset.pop(tp, None)
            else:
                self._committed_offset[tp] = offset
    return done


_on_partitions_revoked = Consumer.on_partitions_revoked


async def _commit_then_revoke(self: Any, revoked: set[TP]) -> None:
    """Commit what is acknowledged before Faust forgets it.

    Faust's revocation drops a revoked partition's acknowledged offsets first, then waits
    for the agents and commits: only what they acknowledged meanwhile. Whatever they had
    acknowledged before stayed uncommitted, and the next owner read it all again (up to
    seconds of records, beyond what the replay memories keep: their pings were
    dead-lettered as ``out_of_order``).
    """
    await self.commit()
    await _on_partitions_revoked(self, revoked)


def install() -> None:
    """Make every Faust consumer in this process commit strictly (the worker calls this once)."""
    patched = cast(Any, Consumer)
    patched._new_offset = _new_offset
    patched._commit_offsets = _commit_offsets_or_keep
    patched.on_partitions_revoked = _commit_then_revoke
