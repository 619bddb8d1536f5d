"""An SDK agent on a worker: its Faust agent, table, output topic, timers and metrics.

The author wrote only a handler; this adds what the built-in steps have: records acked
only once processed, what each record emitted kept with its key's state (a replay after
a crash emits the same events again, never different ones), a record the handler raises
on dead-lettered alone (``telemetry.dlq``, step ``agents.<name>``) while the rest of the
batch goes on, and counters labelled with the agent's name.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from faust.types import StreamT

from streams.app import Runtime
from streams.batching import batches
from streams.fanout import Notifier
from streams.metrics import SDK_DEAD, SDK_EMITTED, SDK_EVENTS, SDK_HANDLER_SECONDS, SDK_RECORDS
from streams.sdk.agent import Agent, TimerContext, apply
from streams.topics import partitions_for


def install(agent: Agent[Any, Any], rt: Runtime) -> None:
    """Define ``agent`` on ``rt``'s app (its output topic is created by the worker before it starts)."""
    s, app, name = rt.settings, rt.app, agent.name
    spec = agent.topic
    rt.extra_topics.append(spec)
    out = app.topic(s.topic(spec.name), partitions=partitions_for(spec, s), key_serializer="raw",
                    value_serializer="raw")  # fmt: skip
    table = rt.table(f"agent-{name}", use_partitioner=True)  # written per key from batches
    records, emitted, dead = SDK_RECORDS.labels(name), SDK_EMITTED.labels(name), SDK_DEAD.labels(name)
    seconds = SDK_HANDLER_SECONDS.labels(name)

    async def publish(pairs: list[tuple[str, Any]], counts: dict[str, float], notifier: Notifier | None) -> None:
        for key, event in pairs:
            await out.send(key=key.encode(), value=event.model_dump_json().encode())
        emitted.inc(len(pairs))
        for counter, n in counts.items():
            SDK_EVENTS.labels(name, counter).inc(n)
        if notifier is not None and agent.audiences is not None and pairs:
            await notifier.send([(agent.audiences(e), e) for _, e in pairs])

    notifiers: list[Notifier] = []

    def notifier_of() -> Notifier | None:
        return notifiers[0] if notifiers else None

    @app.agent(rt.topic(agent.source.topic), name=f"agents.{name}")
    async def run(stream: StreamT[Any]) -> None:
        if agent.audiences is not None and not notifiers:
            notifiers.append(await Notifier.open())
        notifier = notifier_of()
        async for events in batches(stream, 500, 0.05):
            records.inc(len(events))
            pairs: list[tuple[str, Any]] = []
            counts: dict[str, float] = {}
            t0 = time.perf_counter()
            for event in events:
                value, m = event.value, event.message
                if not isinstance(value, agent.source.model):
                    continue
                key = agent.source.key(value)
                source = (m.topic, m.partition, m.offset)
                try:
                    outcome = apply(agent, value, table.get(key.encode()), source, rt.committed(source))
                except Exception as exc:  # the author's bug on this record: it alone is dead-lettered
                    dead.inc()
                    await rt.dead_letter(m, "step_failed", exc, step=f"agents.{name}")
                    continue
                if not outcome.replayed:
                    table[key.encode()] = outcome.state
                pairs += [(key, e) for e in outcome.emitted]
                for c, n in outcome.counts.items():
                    counts[c] = counts.get(c, 0.0) + n
            seconds.observe(time.perf_counter() - t0)
            await publish(pairs, counts, notifier)

    for i, (interval, tick) in enumerate(agent.timers):

        async def timer(tick: Any = tick) -> None:
            ctx: TimerContext[Any] = TimerContext(name, lambda: ((k.decode(), v) for k, v in list(table.items())))
            tick(datetime.now(UTC), ctx)
            await publish(
                [(str(getattr(e, spec.key, None) or name), e) for e in ctx.emitted], ctx.counts, notifier_of()
            )

        rt.timer(interval, f"agents.{name}.timer{i}")(timer)
