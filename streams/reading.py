"""Each stream partition reaches the agents in offset order, from its committed offset, once.

Faust 0.15 can hand agents records out of order around a rebalance:

- its recovery resumes the stream partitions and only then awaits the seek to the committed
  offsets, so a fetch in between reads from the old position;
- a batch fetched before the rebalance is still yielded after it (``getmany`` compares the
  generation only from when the fetch returned), starting ~100 records past the committed
  offset the partition was just sought to.

Faust takes the skipped offsets for a gap in the log, counts them as acknowledged and drops
them when they are read again: a worker delivered a driver's later pings first, the clean
step dead-lettered the earlier ones as ``out_of_order``, or their offsets were committed over
(test_rebalances_under_load_keep_every_driver_in_order_and_lose_nothing). Here a stream
partition stays paused until it was sought, and a record that does not follow the last one
delivered is not delivered: the partition is sought back to the offset that does, and only
what the log really lacks (its first record at or past that offset) passes as a gap.
Changelog partitions are the tables' recovery's business and pass untouched.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from faust.transport.consumer import Consumer
from faust.types import TP, Message
from prometheus_client import Counter

log = logging.getLogger(__name__)
SOUGHT_BACK = Counter(
    "fleetstream_reads_sought_back_total", "Stream partitions sought back over records fetched out of order"
)

_resume_partitions = Consumer.resume_partitions
_perform_seek = Consumer.perform_seek
_on_partitions_assigned = Consumer.on_partitions_assigned
_getmany = Consumer.getmany
_seek = Consumer.seek


class Verdict(enum.Enum):
    DELIVER = "deliver"
    DROP = "drop"  # not ours yet, or read already: the seek to come (or done) reads it in order
    SEEK_BACK = "seek_back"  # the records before it were skipped: read them first


@dataclass
class InOrder:
    """The reading position of one consumer's stream partitions, as far as order goes."""

    guarded: Callable[[str], bool]  # topics whose partitions are checked (stream topics with acks)
    sought: set[TP] = field(default_factory=set)  # sought to their committed offset since assignment
    held: set[TP] = field(default_factory=set)  # resumed by Faust before they were sought
    next: dict[TP, int] = field(default_factory=dict)  # the exact next offset, right after a seek
    skipped_to: dict[TP, int] = field(default_factory=dict)  # the record that made us seek back

    def assigned(self) -> None:
        """A new assignment: every partition is sought again before it is read."""
        self.sought.clear()
        self.held.clear()
        self.next.clear()
        self.skipped_to.clear()

    def hold(self, tps: set[TP]) -> set[TP]:
        """Of partitions Faust resumes, those to keep paused until sought (they are remembered)."""
        held = {tp for tp in tps if tp not in self.sought and self.guarded(tp.topic)}
        self.held |= held
        return held

    def sought_to(self, offsets: Mapping[TP, int | None]) -> set[TP]:
        """Partitions were sought to these offsets (None: no committed offset); returns those to resume."""
        for tp, offset in offsets.items():
            self.sought.add(tp)
            self.skipped_to.pop(tp, None)
            if offset is None:
                self.next.pop(tp, None)
            else:
                self.next[tp] = offset
        release, self.held = self.held & self.sought, self.held - self.sought
        return release

    def moved(self, tp: TP, offset: int) -> None:
        """A partition was sought to ``offset`` (GapRepair's re-read): the next record is that one."""
        if tp in self.sought and self.guarded(tp.topic):
            self.next[tp] = offset
            self.skipped_to.pop(tp, None)

    def check(self, tp: TP, offset: int, last: int | None) -> tuple[Verdict, int]:
        """What to do with the record at ``offset`` of ``tp``; ``last``: Faust's read offset of ``tp``.

        With SEEK_BACK comes the offset to seek to.
        """
        if not self.guarded(tp.topic):
            return Verdict.DELIVER, offset
        if tp not in self.sought:
            return Verdict.DROP, offset
        expected = self.next.get(tp)
        if expected is None and last is not None:
            expected = last + 1
        skipped_to = self.skipped_to.get(tp)
        if (
            expected is None or offset == expected or (skipped_to is not None and expected < offset <= skipped_to)
        ):  # after a seek back, the first record at or past the offset sought is what the log has
            self.next.pop(tp, None)
            self.skipped_to.pop(tp, None)
            return Verdict.DELIVER, offset
        if offset < expected:
            return Verdict.DROP, offset
        self.next[tp] = expected
        self.skipped_to[tp] = offset
        return Verdict.SEEK_BACK, expected


def in_order(consumer: Any) -> InOrder:
    state = consumer.__dict__.get("_fs_in_order")
    if state is None:
        acks_enabled_for = consumer.app.topics.acks_enabled_for
        changelogs = consumer.app.tables.changelog_topics
        known: dict[str, bool] = {}

        def guarded(topic: str) -> bool:
            if topic not in known:
                known[topic] = bool(acks_enabled_for(topic)) and topic not in changelogs
            return known[topic]

        state = consumer.__dict__["_fs_in_order"] = InOrder(guarded)
    return cast(InOrder, state)


def _resume_when_sought(self: Any, tps: Iterable[TP]) -> None:
    tps = set(tps)
    _resume_partitions(self, tps - in_order(self).hold(tps))


async def _perform_seek_then_release(self: Any) -> None:
    await _perform_seek(self)
    state = in_order(self)
    read = self._read_offset
    release = state.sought_to({tp: read.get(tp) for tp in self.assignment() if state.guarded(tp.topic)})
    if release:
        _resume_partitions(self, release)


async def _on_assigned(self: Any, assigned: set[TP], generation_id: int = 0) -> None:
    in_order(self).assigned()
    await _on_partitions_assigned(self, assigned, generation_id)


async def _seek_noted(self: Any, partition: TP, offset: int) -> None:
    await _seek(self, partition, offset)
    in_order(self).moved(partition, offset)


async def _getmany_in_order(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
    state = in_order(self)
    read = self._read_offset
    skip: set[TP] = set()  # sought back: the rest of this batch of theirs is read again
    async for tp, message in _getmany(self, timeout):
        if tp in skip:
            continue
        verdict, offset = state.check(tp, message.offset, read.get(tp))
        if verdict is Verdict.DELIVER:
            yield tp, message
        elif verdict is Verdict.SEEK_BACK:
            skip.add(tp)
            SOUGHT_BACK.inc()
            log.info("%s: read %s where %s was next: reading again from %s", tp, message.offset, offset, offset)
            await self.seek_wait({tp: offset})


def install() -> None:
    """Make every Faust consumer in this process deliver stream records in order (the worker calls this once)."""
    patched = cast(Any, Consumer)
    patched.resume_partitions = _resume_when_sought
    patched.perform_seek = _perform_seek_then_release
    patched.on_partitions_assigned = _on_assigned
    patched.getmany = _getmany_in_order
    patched.seek = _seek_noted
