"""The Faust app, and the :class:`Runtime` an agent module is handed to attach to it.

Settings decide the broker, the app id (the consumer group: run more workers with
the same id to scale out by partitions) and the table store. Nothing here runs at
import: ``streams.worker`` (the composition root) builds the app and installs, in
order, the steps and agents a worker runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP, Message, TableT
from prometheus_client import Counter

from core.config import Settings
from schemas import DeadLetter, deterministic_event_id, encode
from schemas.contracts import TELEMETRY_DLQ, Topic
from streams import codec
from streams.offsets import acked_offsets, committed_offsets, unacked_messages
from streams.poison import transient
from streams.topics import partitions_for

log = logging.getLogger(__name__)

Tick = Callable[[], Awaitable[None]]


class DeadLetteringTopic(faust.Topic):
    """A source topic whose undecodable records go to a dead-letter topic, with the reason.

    Faust acks such a record and carries on; without this hook it would only be logged.
    """

    def __init__(self, *args: Any, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime

    def _clone_args(self) -> Mapping[str, Any]:  # Faust clones topics (an agent's channel): keep the runtime
        return {**super()._clone_args(), "runtime": self.runtime}

    async def on_value_decode_error(self, exc: Exception, message: Message) -> None:
        await self.runtime.dead_letter(message, "undecodable", exc)


async def _dead_letter(app: faust.App, settings: Settings, message: Message, reason: str, exc: BaseException,
                       step: str | None = None, payload: bytes | str | None = None) -> None:  # fmt: skip
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
    await app.producer.send(settings.topic(TELEMETRY_DLQ.name), key=message.key, value=encode(record),
                            partition=None, timestamp=None, headers=None)  # fmt: skip


def create_app(settings: Settings) -> faust.App:
    codec.register()
    datadir = settings.home / "faust"  # each app's tables under it, not "<app id>-data" in the working directory
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_servers}",
        store=settings.faust_store,
        datadir=str(datadir / "{conf.name}"),
        autodiscover=False,
        topic_partitions=settings.telemetry_partitions,
        topic_replication_factor=settings.topic_replication,
        value_serializer=codec.CODEC_NAME,
        key_serializer="raw",
        consumer_auto_offset_reset=settings.consumer_offset_reset,
        producer_acks=-1,
        producer_linger_ms=settings.producer_linger_ms,
        producer_compression_type=settings.producer_compression,
        web_host=settings.bind_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        # A revoked partition moves only once what its agents hold is acknowledged and committed
        # (the store flushes its open buckets when a rebalance starts). Without the wait, the old
        # owner went on with records the new owner re-read from the last commit: both stored the
        # same pings, and the clean step dead-lettered replays as out_of_order
        # (test_rebalances_under_load_keep_every_driver_in_order_and_lose_nothing).
        stream_wait_empty=True,
        table_standby_replicas=settings.table_standby_replicas,
        broker_session_timeout=settings.consumer_session_timeout_s,
        broker_heartbeat_interval=settings.consumer_session_timeout_s / 5,
        # A commit is a producer flush, then an offset commit through Faust's consumer thread.
        # 3 s / 10,000 instead of 1 s / 1,000 did not measurably change ping → socket latency
        # (two runs each, within the run-to-run spread), so the frequent default stays.
        broker_commit_every=settings.commit_every,
        broker_commit_interval=settings.commit_interval_s,
    )
    return app


@dataclass
class Runtime:
    """What an agent module is handed: the app, the settings, and the project's topics and tables.

    Agent modules define their agents, timers and steps inside a function that takes this
    (``install(rt)``, ``step(rt)``); importing them does nothing. Agents, ours or an SDK
    user's, get replay-safe commits, crash handling and dead-lettering from here.
    """

    app: faust.App
    settings: Settings
    crashed: dict[str, str] = field(default_factory=dict)  # agent → repr of what it raised (``/ready``: 503)
    #: Installed agents' topics: the worker creates them before it starts (``fleetstream topics`` has the project's).
    extra_topics: list[Topic[Any]] = field(default_factory=list)

    def topic(self, spec: Topic[Any], **kwargs: Any) -> faust.TopicT:
        """A project topic (declared by ``fleetstream topics``), decoded with the schemas codec."""
        return DeadLetteringTopic(
            self.app,
            topics=[self.settings.topic(spec.name)],
            partitions=partitions_for(spec, self.settings),
            runtime=self,
            **{"value_serializer": codec.CODEC_NAME, "key_serializer": "raw", **kwargs},
        )

    def timer(self, interval: float, name: str) -> Callable[[Tick], Tick]:
        """A Faust timer whose tick a server outage skips, the next tick trying again.

        An exception in a Faust timer crashes the whole worker: a Redis restart stopped every
        worker through the offline-drivers timer while the steps were waiting for it with
        backoff (test_a_redis_crash_does_not_stop_the_worker_and_state_catches_up). Only an
        error that is not a server's (a bug) still stops the worker.
        """

        def register(tick: Tick) -> Tick:
            async def guarded() -> None:
                try:
                    await tick()
                except Exception as exc:
                    if not transient(exc):
                        raise
                    SKIPPED_TICKS.labels(name).inc()
                    log.warning("%s: tick skipped, a server is unreachable: %r", name, exc)

            guarded.__qualname__ = guarded.__name__ = name.rsplit(".", 1)[-1]
            self.app.timer(interval=interval, name=name)(guarded)
            return tick

        return register

    def table(self, name: str, **kwargs: Any) -> TableT[bytes, Any]:
        """A changelog-backed table keyed by raw driver/booking id bytes, JSON values.

        ``key_type=bytes`` is what makes Faust read changelog keys back as raw bytes during
        recovery (a ``schema=`` alone only affects writes).
        """
        return self.app.Table(name, default=None, key_type=bytes, partitions=self.settings.telemetry_partitions,
                              **kwargs)  # fmt: skip

    async def dead_letter(self, message: Message, reason: str, exc: BaseException, step: str | None = None,
                          payload: bytes | str | None = None) -> None:  # fmt: skip
        """``message`` (or ``payload`` for it) to the dead-letter topic with why, and which step refused it.

        The id derives from the record's place in its topic and the step, so a replayed batch
        dead-letters the same record under the same id (consumers dedupe).
        """
        await _dead_letter(self.app, self.settings, message, reason, exc, step, payload)

    def committed(self, source: tuple[str, int, int]) -> int | None:
        """The group's committed offset of a source record's partition (replay memories prune below it)."""
        return committed_offsets(self.app.consumer).get(TP(source[0], source[1]))


#: Exit status of a worker whose agent crashed (distinct from a plain failure to start).
EXIT_CRASHED = 70


def stop_on_agent_error(rt: Runtime) -> Any:
    """Faust's agent error hook for ``rt``'s app (see :func:`_stop`)."""

    async def hook(agent: Any, exc: BaseException) -> None:
        await _stop(rt, agent, exc)

    return hook


async def _stop(rt: Runtime, agent: Any, exc: BaseException) -> None:
    """Crash the whole worker when an agent raised, so that it exits and is restarted.

    Faust would restart the agent inside the running worker, past the batch that failed:
    those records were never acknowledged, so the group's committed offset stayed behind
    them for good (every later record re-read after the next restart) while the worker
    looked healthy. A worker that exits instead is restarted by its supervisor (Kubernetes,
    the demo's watcher) and reads again from the committed offset: nothing is skipped.
    """
    log.critical("agent %s crashed (%r): stopping the worker; it resumes at its committed offsets", agent.name, exc)
    rt.crashed[agent.name] = repr(exc)
    # The process goes, whatever its shutdown does: a shutdown that waited on a dead server
    # kept a crashed worker alive (503, no processing) for minutes, and no supervisor restarts
    # a process that has not exited. Offsets already committed are all it needs to resume.
    exit_timer = threading.Timer(rt.settings.crash_exit_s, os._exit, args=(EXIT_CRASHED,))
    exit_timer.daemon = True
    exit_timer.start()
    await rt.app.crash(exc)
    # Never return: Faust starts a new actor when this hook returns, and that actor would
    # process and ack the records after the failed batch, leaving a gap that freezes the
    # partition's committed offset, and (its table moved on) the replayed batch would be
    # taken for duplicates after the restart.
    await asyncio.Event().wait()


def undelivered(committed_at: Mapping[Any, int | None], acked_at: Mapping[Any, list[int]],
                in_flight: set[tuple[Any, int]], highwater: Mapping[Any, int | None]) -> dict[Any, int]:  # fmt: skip
    """Partitions whose record at the committed offset is neither acked nor in flight, though it exists.

    Two shapes: a hole below acked offsets (records after it were delivered), or, with
    nothing acked and nothing in flight, a head record below the partition's end (the
    only record of a quiet partition, dropped: nothing after it would ever show the hole).
    """
    flying = {tp for tp, _ in in_flight}
    out: dict[Any, int] = {}
    for tp, committed in committed_at.items():
        if committed is None:  # Faust keeps None for a partition committed at offset 0 or never
            continue
        acked = acked_at.get(tp)
        if acked:
            first = min(acked)
            if first > committed and not any((tp, o) in in_flight for o in range(committed, first)):
                out[tp] = committed
        elif tp not in flying and (high := highwater.get(tp)) is not None and high > committed:
            out[tp] = committed
    return out


class GapRepair:
    """Re-reads records that Faust dropped in process, so the committed offset can pass them.

    Faust commits a partition only up to its first offset that was never acked. A record
    that its fetcher read but never delivered (cancelled while the flow was suspended for a
    rebalance) is never acked: the group's committed offset then froze on that partition
    while the worker went on processing it, every restart replayed everything after it, and
    the lag never returned to 0 (a lag-based autoscaler would scale up for good). A record
    :func:`undelivered` finds, still so at the next check, is such a record: the partition
    is sought back to the committed offset and read again (steps are replay-safe; acked
    offsets are not acked twice).
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.suspects: dict[Any, int] = {}

    def holes(self) -> dict[Any, int]:
        consumer = self.app.consumer
        in_flight = {(m.tp, m.offset) for m in list(unacked_messages(consumer))}
        mine = set(consumer.assignment())
        committed_at = {
            tp: o
            for tp, o in committed_offsets(consumer).items()
            if tp in mine and self.app.topics.acks_enabled_for(tp.topic)
        }  # agents' sources only
        highwater = {tp: consumer.highwater(tp) for tp in committed_at}
        return undelivered(committed_at, acked_offsets(consumer), in_flight, highwater)

    async def check(self) -> None:
        found = self.holes()
        for tp, committed in found.items():
            if self.suspects.get(tp) == committed:
                REPAIRED_GAPS.inc()
                log.warning("offset %s of %s was never delivered: reading again from it", committed, tp)
                await self.app.consumer.seek(tp, committed)
        self.suspects = found


SKIPPED_TICKS = Counter("fleetstream_timer_ticks_skipped_total", "Timer ticks skipped while a server was unreachable",
                        ["timer"])  # fmt: skip
REPAIRED_GAPS = Counter("fleetstream_offset_gaps_repaired_total", "Partitions sought back over an undelivered record")
