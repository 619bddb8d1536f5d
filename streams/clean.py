"""Clean: drops duplicates, out-of-order fixes, low accuracy and impossible jumps.

Reads device batches from ``telemetry.raw`` and writes the accepted pings of each as
one batch to ``telemetry.clean``; every rejected ping goes to ``telemetry.dlq`` with
its reason. The last accepted fix per driver lives in a changelog-backed table, so a
restarted worker filters exactly as before; with it, what each recent source record
produced (``streams.replay``), so a record replayed after a crash is re-emitted rather
than mistaken for a duplicate of itself. Output ids derive from the input's id, so
a replay re-emits identical records that downstream consumers dedupe.
"""

from __future__ import annotations

from fleetstream.config import get_settings
from schemas import DeadLetter, TelemetryBatch, deterministic_event_id
from streams.app import app, table, topic
from streams.metrics import DROPPED, PINGS, RECORDS
from streams.replay import produced_before, remember, seq_members, seq_set
from streams.rules import CleanLimits, clean_pings

raw = topic("telemetry.raw")
clean_topic = topic("telemetry.clean")
dlq = topic("telemetry.dlq")

last_accepted = table(
    "clean-last-accepted",
)


@app.agent(raw)
async def clean(stream):  # type: ignore[no-untyped-def]
    s = get_settings()
    limits = CleanLimits(max_accuracy_m=s.max_accuracy_m, max_speed_mps=s.max_speed_mps)
    async for event in stream.events():
        RECORDS.labels("clean").inc()
        batch = event.value
        if not isinstance(batch, TelemetryBatch):
            continue
        key = batch.driver_id.encode()
        msg = event.message
        state = last_accepted.get(key) or {}
        replayed = produced_before(state, msg.partition, msg.offset)
        if replayed is not None:
            seqs = seq_members(replayed)
            good, bad = [p for p in batch.pings if p.seq in seqs], []
        else:
            good, bad, last = clean_pings(state.get("last"), batch.pings, limits)
            state = remember({**state, "last": last}, msg.partition, msg.offset, seq_set([p.seq for p in good]))
        PINGS.labels("clean").inc(len(batch.pings))
        for ping, reason, detail in bad:
            DROPPED.labels(reason).inc()
            await dlq.send(
                key=key,
                value=DeadLetter(
                    event_id=deterministic_event_id("dlq", batch.event_id, ping.seq, reason),
                    source_topic=raw.get_topic_name(),
                    reason=reason,
                    detail=detail,
                    key=batch.driver_id,
                    payload=ping.model_dump_json(),
                ),
            )
        if good:
            out = TelemetryBatch(
                event_id=deterministic_event_id("clean", batch.event_id),
                occurred_at=batch.occurred_at,
                driver_id=batch.driver_id,
                received_at=batch.received_at,
                pings=good,
            )
            await clean_topic.send(key=key, value=out)
        if replayed is None:
            last_accepted[key] = state
