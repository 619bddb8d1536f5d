"""Faust's in-memory table store, made to remember how far each changelog partition is applied.

Faust's memory store reports no offsets, so after every rebalance recovery rereads every
active changelog partition from its start, even one this worker kept warm as a standby or
held already: a hand-over's reread grows with the drivers per partition. This store keeps
the offset it has applied (from recovery and standby reads, and from its own acknowledged
writes), so recovery reads only what it has not seen. The offsets live in the process, as
the data does: a restarted worker starts from nothing and reads everything.

Registered as ``fleetmemory://`` (pyproject's ``faust.stores`` entry point).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from faust.stores import memory
from faust.types import TP, EventT


class Store(memory.Store):
    """A memory store whose data and offsets are kept for the partitions it is still given."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._applied: dict[TP, int] = {}

    def persisted_offset(self, tp: TP) -> int | None:
        return self._applied.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """Called once the changelog write of this worker's own update is acknowledged."""
        if offset > self._applied.get(tp, -1):
            self._applied[tp] = offset

    def apply_changelog_batch(
        self, batch: Iterable[EventT], to_key: Callable[[Any], Any], to_value: Callable[[Any], Any]
    ) -> None:
        super().apply_changelog_batch(self._noting_offsets(batch), to_key, to_value)

    def _noting_offsets(self, batch: Iterable[EventT]) -> Iterator[EventT]:
        """The batch, one pass: an event's offset is noted when the next is asked for (it is applied then)."""
        for event in batch:
            yield event
            self.set_persisted_offset(event.message.tp, event.message.offset)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Forget what belongs to partitions this worker no longer holds, active or standby.

        Faust's memory store drops standby partitions' keys here too, so a standby copy was
        never complete and had to be read again; the kept ones must stay whole, since their
        offsets now say they are. A partition given up loses its offset with its keys: if it
        comes back, it is read from the start.
        """
        kept = {tp.partition for tp in active_tps | standby_tps}
        for key in [k for k, p in self._key_partition.items() if p not in kept]:
            self.data.pop(key, None)
            self._key_partition.pop(key, None)
        for tp in [tp for tp in self._applied if tp.partition not in kept]:
            del self._applied[tp]

    def reset_state(self) -> None:
        self._applied.clear()
