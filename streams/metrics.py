"""Worker metrics, served at ``/metrics`` on the worker's web port (Prometheus text format)."""

from __future__ import annotations

import asyncio
import time
from typing import cast

from faust.tables.manager import TableManager
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from streams.app import Runtime
from streams.offsets import committed_offsets

RECORDS = Counter("fleetstream_agent_records_total", "Kafka records processed per agent", ["agent"])
PINGS = Counter("fleetstream_agent_pings_total", "Pings processed per agent", ["agent"])
DROPPED = Counter("fleetstream_pings_dropped_total", "Pings dropped by the clean agent", ["reason"])
#: A record read again from further back than its key's replay memory (a commit that lagged a
#: catch-up burst, or never happened before a kill): re-emitted from the accepted-seq window.
REPLAYED_PAST_MEMORY = Counter("fleetstream_replayed_past_memory_total", "Records replayed beyond the replay memory")
STORED = Counter("fleetstream_pings_stored_total", "Pings written to MongoDB history (fully processed)")
LAG = Gauge("fleetstream_consumer_lag", "Records behind the partition end", ["topic", "partition"])
#: From the producer's create time of a batch's oldest record to its batch starting here (the
#: time a ping waited in Kafka and the agent's buffer: lag in seconds, where LAG counts records).
RECORD_AGE = Histogram(
    "fleetstream_record_age_seconds",
    "Age of a batch's oldest record when processing starts",
    ["agent"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
#: The part of RECORD_AGE spent before the worker's consumer handed the record to Faust
#: (producer → broker → fetch → consumer thread); the rest is Faust's buffers and the batch linger.
RECEIVED_AGE = Histogram(
    "fleetstream_record_received_age_seconds",
    "Age of a batch's oldest record when the worker's consumer received it",
    ["agent"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
#: How late a 20 ms sleep wakes up: the time the worker's event loop was busy elsewhere (a
#: batch's CPU work, Faust's bookkeeping), which every record waiting behind it also waits.
LOOP_LAG = Histogram(
    "fleetstream_loop_lag_seconds",
    "Extra delay of a 20 ms sleep on the worker's event loop",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
)
#: Per step of the telemetry agent, and "clean" and "batch" (a whole batch, steps concurrent):
#: where a batch's time goes when the agent falls behind without using its CPU.
STEP_SECONDS = Histogram(
    "fleetstream_step_seconds",
    "Duration of one telemetry batch in a step",
    ["step"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
#: SDK agents (``streams.sdk``), labelled with the agent's name without its author doing anything.
SDK_RECORDS = Counter("fleetstream_sdk_records_total", "Source records read by an SDK agent", ["agent"])
SDK_EMITTED = Counter("fleetstream_sdk_emitted_total", "Events an SDK agent emitted", ["agent"])
SDK_DEAD = Counter("fleetstream_sdk_dead_lettered_total", "Records an SDK agent's handler raised on", ["agent"])
SDK_EVENTS = Counter(
    "fleetstream_sdk_events_total", "Counters an SDK agent's handler kept (ctx.count)", ["agent", "name"]
)
SDK_HANDLER_SECONDS = Histogram("fleetstream_sdk_handler_seconds", "Handler time per batch of an SDK agent", ["agent"],
                                buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1))  # fmt: skip
DRIVERS_ONLINE = Gauge("fleetstream_drivers_online", "Drivers currently in the online set (Redis)")


def install(rt: Runtime) -> None:
    """``/metrics`` and ``/ready`` on the worker's web port, and the lag gauges."""
    app = rt.app

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        # aiohttp wants the charset apart from the media type.
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/ready")
    async def ready(web: View, request: Request) -> Response:
        """200 once this worker holds partitions and recovered its tables (k8s readiness); 503 once an agent crashed."""
        recovered = cast(TableManager, app.tables).recovery.completed.is_set()
        ok = bool(app.consumer.assignment()) and not app.rebalancing and recovered and not rt.crashed
        body = {"ready": ok, "partitions": len(app.consumer.assignment()), "crashed_agents": rt.crashed}
        return web.json(body, status=200 if ok else 503)

    @app.timer(interval=2.0, name="streams.metrics.measure_lag")
    async def measure_lag() -> None:
        consumer = app.consumer
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            committed = committed_offsets(consumer).get(tp)
            if high is not None and committed is not None:
                LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - committed))

    @app.task
    async def watch_loop_lag() -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.02)
            LOOP_LAG.observe(max(0.0, time.monotonic() - t0 - 0.02))
