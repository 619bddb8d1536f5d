"""Clean: drops duplicates, out-of-order fixes, low accuracy and impossible jumps.

The first step of the telemetry agent (``streams.pipeline``): reads device batches from
``telemetry.raw``, writes the accepted pings of each as one batch to ``telemetry.clean``
and hands them to the other steps; every rejected ping goes to ``telemetry.dlq`` with
its reason. The last accepted fix per driver lives in a changelog-backed table, so a
restarted worker filters exactly as before; with its speed and heading it is also the
driver's state (``streams.driver_state`` mirrors it to Redis). With it, what each recent
source record produced (``streams.replay``), so a record replayed after a crash is
re-emitted rather than mistaken for a duplicate of itself; a record replayed from further
back than that memory (``streams.replay.seen_before``) re-emits those of its pings the
driver's window of accepted seqs holds, and dead-letters none. A clean batch keeps its
device batch's event id (a dead letter's id derives from it), so a replay re-emits
identical records that downstream consumers dedupe.
"""

from __future__ import annotations

from collections.abc import Sequence

from faust.types import EventT

from schemas import DeadLetter, GpsPing, TelemetryBatch, deterministic_event_id
from schemas.contracts import TELEMETRY_CLEAN, TELEMETRY_DLQ
from streams import pipeline
from streams.app import Runtime
from streams.metrics import DROPPED, PINGS, REPLAYED_PAST_MEMORY
from streams.replay import produced_before, remember, seen_before, seq_members, seq_set, window_add, window_has
from streams.rules import CleanLimits, clean_pings


def cleaner(rt: Runtime) -> pipeline.CleanerFactory:
    """The first telemetry step: its output topic, its table, and the cleaning of each device record."""
    app, s = rt.app, rt.settings
    clean_topic = rt.topic(TELEMETRY_CLEAN)
    clean_name = s.topic(TELEMETRY_CLEAN.name)
    dlq = rt.topic(TELEMETRY_DLQ)
    last_accepted = rt.table(
        "clean-last-accepted",
        use_partitioner=True,  # written from batches: the key's partition is its source record's
    )
    limits = CleanLimits(max_accuracy_m=s.max_accuracy_m, max_speed_mps=s.max_speed_mps)

    async def clean(events: Sequence[EventT]) -> list[pipeline.Item]:
        out: list[pipeline.Item] = []
        for event in events:
            batch = event.value
            if not isinstance(batch, TelemetryBatch):
                continue
            key = batch.driver_id.encode()
            msg = event.message
            source = (msg.topic, msg.partition, msg.offset)
            state = last_accepted.get(key) or {}
            replayed = produced_before(state, source)
            if replayed is not None:
                seqs = seq_members(replayed)
                good, bad = [p for p in batch.pings if p.seq in seqs], list[tuple[GpsPing, str, str]]()
            elif seen_before(state, source):  # processed, its memory pruned: what was accepted then
                window = state.get("accepted", [])
                good, bad = [p for p in batch.pings if window_has(window, p.seq)], []
                REPLAYED_PAST_MEMORY.inc()
            else:
                good, bad, last = clean_pings(state.get("last"), batch.pings, limits)
                accepted = [p.seq for p in good]
                memory = remember({**state, "last": last, "accepted": window_add(state.get("accepted", []), accepted)},
                                  source, seq_set(accepted), rt.committed(source))  # fmt: skip
                last_accepted[key] = memory
            PINGS.labels("clean").inc(len(batch.pings))
            for ping, reason, detail in bad:
                DROPPED.labels(reason).inc()
                await dlq.send(
                    key=key,
                    value=DeadLetter(
                        event_id=deterministic_event_id("dlq", batch.event_id, ping.seq, reason),
                        source_topic=msg.topic,
                        reason=reason,
                        detail=detail,
                        key=batch.driver_id,
                        payload=ping.model_dump_json(),
                    ),
                )
            if len(good) == len(batch.pings) and isinstance(msg.value, bytes):
                # Nothing dropped (the usual case): the device batch's own bytes, not a re-encoded
                # copy, and straight to the producer, past Faust's channel machinery (a tenth of
                # the worker's CPU). Commits still wait for it: Faust flushes the producer first.
                await app.producer.send(clean_name, key, msg.value, partition=None, timestamp=None, headers=None)
                out.append(pipeline.Item(batch, source, msg))
            elif good:
                cleaned = batch.model_copy(update={"pings": good})
                await clean_topic.send(key=key, value=cleaned)
                out.append(pipeline.Item(cleaned, source, msg))
        return out

    async def make() -> pipeline.Cleaner:
        return clean

    return make
