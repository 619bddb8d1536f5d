"""The Faust application every agent module attaches to.

Settings decide the broker, the app id (the consumer group: run more workers with
the same id to scale out by partitions) and the table store. Agents are plain
modules listed in :data:`AGENT_MODULES`; ``fleetstream worker --agents`` can run a
subset, so the driver and booking services can be deployed as separate processes.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import threading
from typing import Any

import faust
from faust.types import Message
from prometheus_client import Counter

from fleetstream.config import Settings, get_settings
from schemas import DeadLetter, deterministic_event_id, encode
from schemas.contracts import TELEMETRY_DLQ, Topic
from streams import codec
from streams.offsets import acked_offsets, committed_offsets, unacked_messages
from streams.topics import partitions_for

log = logging.getLogger(__name__)

codec.register()

#: Agent modules in dependency order; each defines its agents on import.
AGENT_MODULES: dict[str, str] = {
    "clean": "streams.clean",
    "driver_state": "streams.driver_state",
    "geofence": "streams.geofence",
    "store": "streams.store",
    "publish": "streams.publish",
    "bookings": "streams.bookings",
    "matching": "streams.matching",
    "eta": "streams.eta",
}


class DeadLetteringTopic(faust.Topic):
    """A source topic whose undecodable records go to a dead-letter topic, with the reason.

    Faust acks such a record and carries on; without this hook it would only be logged.
    """

    async def on_value_decode_error(self, exc: Exception, message: Message) -> None:
        await dead_letter(message, "undecodable", exc)


async def dead_letter(message: Message, reason: str, exc: BaseException, step: str | None = None,
                      payload: bytes | str | None = None) -> None:  # fmt: skip
    """``message`` (or ``payload`` for it) to the dead-letter topic with why, and which step refused it.

    The id derives from the record's place in its topic and the step, so a replayed batch
    dead-letters the same record under the same id (consumers dedupe).
    """
    if payload is None:
        payload = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
    text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
    record = DeadLetter(
        event_id=deterministic_event_id("dlq", message.topic, message.partition, message.offset, step, reason),
        source_topic=message.topic,
        reason=reason,
        step=step,
        detail=f"{type(exc).__name__}: {exc}"[:4000],
        key=(message.key or b"").decode(errors="replace")[:255],
        payload=text[:1_000_000],
    )
    log.warning("dead-lettering %s[%s]@%s (%s, step %s): %s", message.topic, message.partition, message.offset,
                reason, step, exc)  # fmt: skip
    await app.producer.send(get_settings().topic(TELEMETRY_DLQ.name), key=message.key, value=encode(record),
                            partition=None, timestamp=None, headers=None)  # fmt: skip


def create_app(settings: Settings) -> faust.App:
    datadir = settings.home / "faust"  # each app's tables under it, not "<app id>-data" in the working directory
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_servers}",
        store=settings.faust_store,
        datadir=str(datadir / "{conf.name}"),
        autodiscover=False,
        topic_partitions=settings.telemetry_partitions,
        topic_replication_factor=1,
        value_serializer=codec.CODEC_NAME,
        key_serializer="raw",
        consumer_auto_offset_reset=settings.consumer_offset_reset,
        producer_acks=-1,
        producer_linger_ms=settings.producer_linger_ms,
        producer_compression_type=settings.producer_compression,
        web_host=settings.bind_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        stream_wait_empty=False,
        table_standby_replicas=settings.table_standby_replicas,
        # A commit is a producer flush, then an offset commit through Faust's consumer thread.
        # 3 s / 10,000 instead of 1 s / 1,000 did not measurably change ping → socket latency
        # (two runs each, within the run-to-run spread), so the frequent default stays.
        broker_commit_every=settings.commit_every,
        broker_commit_interval=settings.commit_interval_s,
    )
    return app


app = create_app(get_settings())


def topic(spec: Topic[Any], **kwargs: Any) -> faust.TopicT:
    """A project topic (declared by ``fleetstream topics``), decoded with the schemas codec."""
    return DeadLetteringTopic(
        app,
        topics=[get_settings().topic(spec.name)],
        partitions=partitions_for(spec, get_settings()),
        **{"value_serializer": codec.CODEC_NAME, "key_serializer": "raw", **kwargs},
    )


def table(name: str, **kwargs: Any) -> faust.types.TableT[bytes, Any]:
    """A changelog-backed table keyed by raw driver/booking id bytes, JSON values.

    ``key_type=bytes`` is what makes Faust read changelog keys back as raw bytes during
    recovery (a ``schema=`` alone only affects writes).
    """
    return app.Table(name, default=None, key_type=bytes, partitions=get_settings().telemetry_partitions, **kwargs)


#: Exit status of a worker whose agent crashed (distinct from a plain failure to start).
EXIT_CRASHED = 70

#: Agents that raised, with the exception: ``/ready`` answers 503 while the worker goes down.
CRASHED: dict[str, str] = {}


async def stop_on_agent_error(agent: Any, exc: BaseException) -> None:
    """Crash the whole worker when an agent raised, so that it exits and is restarted.

    Faust would restart the agent inside the running worker, past the batch that failed:
    those records were never acknowledged, so the group's committed offset stayed behind
    them for good (every later record re-read after the next restart) while the worker
    looked healthy. A worker that exits instead is restarted by its supervisor (Kubernetes,
    the demo's watcher) and reads again from the committed offset: nothing is skipped.
    """
    log.critical("agent %s crashed (%r): stopping the worker; it resumes at its committed offsets", agent.name, exc)
    CRASHED[agent.name] = repr(exc)
    # The process goes, whatever its shutdown does: a shutdown that waited on a dead server
    # kept a crashed worker alive (503, no processing) for minutes, and no supervisor restarts
    # a process that has not exited. Offsets already committed are all it needs to resume.
    exit_timer = threading.Timer(get_settings().crash_exit_s, os._exit, args=(EXIT_CRASHED,))
    exit_timer.daemon = True
    exit_timer.start()
    await app.crash(exc)
    # Never return: Faust starts a new actor when this hook returns, and that actor would
    # process and ack the records after the failed batch, leaving a gap that freezes the
    # partition's committed offset, and (its table moved on) the replayed batch would be
    # taken for duplicates after the restart.
    await asyncio.Event().wait()


class GapRepair:
    """Re-reads records that Faust dropped in process, so the committed offset can pass them.

    Faust commits a partition only up to its first offset that was never acked. A record
    that its fetcher read but never delivered (cancelled while the flow was suspended for a
    rebalance) is never acked: the group's committed offset then froze on that partition
    while the worker went on processing it, every restart replayed everything after it, and
    the lag never returned to 0 (a lag-based autoscaler would scale up for good). A hole
    below the acked offsets that nothing in flight covers, and that is still there at the
    next check, is such a record: the partition is sought back to the committed offset and
    read again (steps are replay-safe; acked offsets are not acked twice).
    """

    def __init__(self) -> None:
        self.suspects: dict[Any, int] = {}

    def holes(self) -> dict[Any, int]:
        consumer = app.consumer
        in_flight = {(m.tp, m.offset) for m in list(unacked_messages(consumer))}
        committed_at = committed_offsets(consumer)
        out = {}
        for tp, acked in list(acked_offsets(consumer).items()):
            committed = committed_at.get(tp)
            if not acked or committed is None:
                continue
            first = min(acked)
            if first > committed and not any((tp, o) in in_flight for o in range(committed, first)):
                out[tp] = committed
        return out

    async def check(self) -> None:
        found = self.holes()
        for tp, committed in found.items():
            if self.suspects.get(tp) == committed:
                REPAIRED_GAPS.inc()
                log.warning("offsets %s of %s were never delivered: reading again from %s", committed, tp, committed)
                await app.consumer.seek(tp, committed)
        self.suspects = found


REPAIRED_GAPS = Counter("fleetstream_offset_gaps_repaired_total", "Partitions sought back over an undelivered record")


def load_agents(names: list[str] | None = None) -> list[str]:
    chosen = names or list(AGENT_MODULES)
    unknown = [n for n in chosen if n not in AGENT_MODULES]
    if unknown:
        raise ValueError(f"unknown agents {unknown}; known: {sorted(AGENT_MODULES)}")
    importlib.import_module("streams.metrics")
    importlib.import_module("streams.offsets").install()  # never commit past an unacknowledged record
    for n in chosen:
        importlib.import_module(AGENT_MODULES[n])
    importlib.import_module("streams.pipeline").build(chosen)  # one agent for the telemetry steps among them
    for agent in app.agents.values():
        agent._on_error = stop_on_agent_error  # Faust's hook; set here so every agent, ours or yours, has it
    app.timer(interval=get_settings().gap_check_s, name="streams.app.repair_gaps")(GapRepair().check)
    return chosen
