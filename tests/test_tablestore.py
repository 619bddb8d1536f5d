"""The table store keeps what it applied, per changelog partition, for the partitions it still holds."""

from __future__ import annotations

from typing import Any

import faust
from faust.events import Event
from faust.types import TP, Message

from core.config import Settings
from streams.app import create_app


def make_table() -> Any:
    app = create_app(Settings(app_id="tablestore-test"))
    assert app.conf.store.scheme == "fleetmemory"
    return app.Table("t", default=None, key_type=bytes, partitions=2)


def events(app: faust.App, topic: str, partition: int, offsets: range) -> list[Event]:
    out = []
    for o in offsets:
        key, value = f"k{partition}-{o % 3}".encode(), o
        message = Message(topic, partition, o, 0.0, 0, None, key, b"x", None, tp=TP(topic, partition))
        out.append(Event(app, key, value, None, message))
    return out


async def test_recovery_reads_only_what_was_not_applied_and_keeps_standby_partitions_whole() -> None:
    table = make_table()
    store, topic = table.data, table.changelog_topic.get_topic_name()
    p0, p1 = TP(topic, 0), TP(topic, 1)
    assert store.persisted_offset(p0) is None  # nothing applied: recovery starts at the beginning

    store.apply_changelog_batch(events(table.app, topic, 0, range(5)), lambda k: k, lambda v: v)
    store.apply_changelog_batch(events(table.app, topic, 1, range(3)), lambda k: k, lambda v: v)
    assert (store.persisted_offset(p0), store.persisted_offset(p1)) == (4, 2)
    store.set_persisted_offset(p0, 9)  # this worker's own write, acknowledged
    store.set_persisted_offset(p0, 7)  # an older acknowledgement never moves it back
    assert store.persisted_offset(p0) == 9

    # p1 kept as a standby: its keys and its offset stay (the stock store dropped its keys)
    await store.on_recovery_completed({p0}, {p1})
    assert store.data[b"k1-2"] == 2 and store.persisted_offset(p1) == 2
    # p1 given up altogether: keys and offset go, so coming back means reading it all again
    await store.on_recovery_completed({p0}, set())
    assert b"k1-2" not in store.data and store.persisted_offset(p1) is None
    assert store.data[b"k0-1"] == 4 and store.persisted_offset(p0) == 9
    store.reset_state()
    assert store.persisted_offset(p0) is None
