"""The Faust application every agent module attaches to.

Settings decide the broker, the app id (the consumer group: run more workers with
the same id to scale out by partitions) and the table store. Agents are plain
modules listed in :data:`AGENT_MODULES`; ``fleetstream worker --agents`` can run a
subset, so the driver and booking services can be deployed as separate processes.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import faust
from faust.types import Message

from fleetstream.config import Settings, get_settings
from schemas import DeadLetter, encode
from streams import codec
from streams.topics import TOPICS, partitions_for

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
        source = message.topic
        dlq = get_settings().topic("telemetry.dlq")
        raw = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
        record = DeadLetter(
            source_topic=source,
            reason="undecodable",
            detail=str(exc)[:4000],
            key=(message.key or b"").decode(errors="replace")[:255],
            payload=raw.decode(errors="replace")[:1_000_000],
        )
        log.warning("dead-lettering undecodable record %s[%s]@%s: %s", source, message.partition, message.offset, exc)
        await self.app.producer.send(
            dlq, key=message.key, value=encode(record), partition=None, timestamp=None, headers=None
        )


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


def topic(name: str, **kwargs: Any) -> faust.TopicT:
    """A project topic (declared by ``fleetstream topics``), decoded with the schemas codec."""
    spec = next(t for t in TOPICS if t.name == name)
    return DeadLetteringTopic(
        app,
        topics=[get_settings().topic(name)],
        partitions=partitions_for(spec, get_settings()),
        **{"value_serializer": codec.CODEC_NAME, "key_serializer": "raw", **kwargs},
    )


def table(name: str, **kwargs: Any) -> faust.Table:
    """A changelog-backed table keyed by raw driver/booking id bytes, JSON values.

    ``key_type=bytes`` is what makes Faust read changelog keys back as raw bytes during
    recovery (a ``schema=`` alone only affects writes).
    """
    return app.Table(name, default=None, key_type=bytes, partitions=get_settings().telemetry_partitions, **kwargs)


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
    await app.crash(exc)


def load_agents(names: list[str] | None = None) -> list[str]:
    chosen = names or list(AGENT_MODULES)
    unknown = [n for n in chosen if n not in AGENT_MODULES]
    if unknown:
        raise ValueError(f"unknown agents {unknown}; known: {sorted(AGENT_MODULES)}")
    importlib.import_module("streams.metrics")
    for n in chosen:
        importlib.import_module(AGENT_MODULES[n])
    importlib.import_module("streams.pipeline").build(chosen)  # one agent for the telemetry steps among them
    for agent in app.agents.values():
        agent._on_error = stop_on_agent_error  # Faust's hook; set here so every agent, ours or yours, has it
    return chosen
