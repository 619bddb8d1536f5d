"""Every name that crosses a process: Kafka topics, Redis keys, RabbitMQ routing keys, audiences.

The API, the workers, the sinks and the benchmarks import these; none of them spells a
topic, key or routing key of its own (``tests/test_contracts.py`` fails if one does). A
name changed here changes on both sides of the wire at once, and a type checker follows
a value from the API to the socket that receives it.

Ids spliced into these names are :data:`schemas.base.Ident` (no ``.``, ``:``, ``*`` or
``#``), so no id can form another's key or routing pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

from schemas.bookings import BookingCommand, BookingEvent
from schemas.events import DeadLetter, DriverStatusEvent, EtaUpdate, GeofenceEvent
from schemas.reports import MovementEvent
from schemas.telemetry import TelemetryBatch

# --- Kafka topics ------------------------------------------------------------------------

WEEK_MS = 7 * 24 * 3600 * 1000
V = TypeVar("V", bound=BaseModel, covariant=True)


@dataclass(frozen=True)
class Topic(Generic[V]):
    """A project topic: its name (before the namespace prefix), key, value schema and retention.

    Keys decide scale: telemetry is keyed by driver id and bookings by booking id, and every
    keyed topic of one kind shares a partition count so that Faust tables stay co-partitioned
    with the streams that update them.
    """

    name: str
    key: Literal["driver_id", "booking_id"]
    value: type[V]
    doc: str
    compacted: bool = False
    retention_ms: int = WEEK_MS
    config: dict[str, str] = field(default_factory=dict)

    def kafka_config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete", **self.config}
        if not self.compacted:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


TELEMETRY_RAW = Topic("telemetry.raw", "driver_id", TelemetryBatch, "device batches as accepted by the API")
TELEMETRY_CLEAN = Topic("telemetry.clean", "driver_id", TelemetryBatch, "pings that passed the clean filters")
TELEMETRY_DLQ = Topic(
    "telemetry.dlq", "driver_id", DeadLetter, "records a step refused, with the step and the reason",
    retention_ms=4 * WEEK_MS,
)  # fmt: skip
DRIVER_STATUS = Topic("drivers.status", "driver_id", DriverStatusEvent, "online/offline/busy transitions")
GEOFENCE_EVENTS = Topic("geofence.events", "driver_id", GeofenceEvent, "enter/exit/dwell per driver and zone")
BOOKING_COMMANDS = Topic("bookings.commands", "booking_id", BookingCommand, "what callers asked for")
BOOKING_EVENTS = Topic("bookings.events", "booking_id", BookingEvent, "accepted booking transitions")
ETA_UPDATES = Topic("eta.updates", "booking_id", EtaUpdate, "ETA changes per active booking")
#: The trips agent's output (``streams.agents.trips``; an SDK agent's topic is ``agents.<name>``).
TRIPS = Topic("agents.trips", "driver_id", MovementEvent, "trips and stops opened, advanced and closed")

#: Every topic the project owns; ``fleetstream topics`` creates exactly these (broker-side
#: auto-creation is off).
TOPICS: tuple[Topic[BaseModel], ...] = (
    TELEMETRY_RAW,
    TELEMETRY_CLEAN,
    TELEMETRY_DLQ,
    DRIVER_STATUS,
    GEOFENCE_EVENTS,
    BOOKING_COMMANDS,
    BOOKING_EVENTS,
    ETA_UPDATES,
    TRIPS,
)

# --- Redis keys --------------------------------------------------------------------------

GEO_KEY = "drivers:geo:available"  # geo set of online drivers that are not busy
SEEN_KEY = "drivers:last_seen"  # sorted set, score = wall-clock time of the last processed ping
#: Every driver heard of lately, online or not (score as SEEN_KEY's): the dispatcher's fleet. The
#: offline timer takes drivers out of SEEN_KEY as it claims them; they stay here, shown offline,
#: until silent for ``driver_known_s``.
KNOWN_KEY = "drivers:known"
JOBS_KEY = "drivers:job"  # hash driver id → booking id it works on
CELLS_KEY = "drivers:cell"  # hash driver id → H3 cell of its last fix (matching prices the drive from there)
SPEEDS_KEY = "speeds"  # hash "{cell}:{hour}" → learned speed, m/s
#: Stream of zone changes (field ``zone``: the id created, replaced or deleted); each worker
#: applies the entries after the last it read to its index, zone by zone (``streams.geofence``).
ZONE_CHANGES_KEY = "zones:changes"
ZONE_CHANGES_MAXLEN = 100_000
DEADLINES_KEY = "offers:deadlines"  # sorted set of open offers by deadline (``streams.reservations``)
PENDING_KEY = "bookings:pending"  # set of bookings waiting for a driver
#: Where every API replica hears of a revoked device token (pub/sub; the payload is the token id).
REVOKED_CHANNEL = "devtokens:revoked"


def driver_key(driver_id: str) -> str:
    """A driver's live state (hash)."""
    return f"driver:{driver_id}"


def reserve_key(driver_id: str) -> str:
    """The booking holding a driver (``streams.reservations``)."""
    return f"reserve:driver:{driver_id}"


def mirror_key(booking_id: str) -> str:
    """A booking's public view, written by the bookings agent for the API and matching."""
    return f"booking:{booking_id}"


def reply_key(command_id: str) -> str:
    """The list the bookings agent pushes a command's verdict to; the API waits on it."""
    return f"reply:{command_id}"


def idempotency_key(subject: str, key: str) -> str:
    """The booking a caller's ``Idempotency-Key`` already created."""
    return f"idem:{subject}:{key}"


def device_key(token_id: str) -> str:
    """A device token's record (driver id, secret's hash, revoked), read on a token-cache miss."""
    return f"devtoken:{token_id}"


def replay_key(audience: str) -> str:
    """An audience's bounded replay stream: what a reconnecting socket catches up from."""
    return f"notify:{audience}"


def replay_ids_key(audience: str) -> str:
    """Event id → replay stream id of an audience: a replayed event keeps its first id."""
    return f"notify:ids:{audience}"


def zone_members_key(zone_id: str) -> str:
    """Set of the drivers inside a zone now (enters add, exits remove: ``streams.publish``)."""
    return f"zone:{zone_id}:inside"


def track_seq_key(driver_id: str) -> str:
    """A driver's history buckets by first seq (``sinks.track_index``)."""
    return f"track:{driver_id}:seq"


def track_time_key(driver_id: str) -> str:
    """A driver's history buckets by first fix time (``sinks.track_index``)."""
    return f"track:{driver_id}:t0"


def read_limit_key(subject: str, window: int) -> str:
    """A principal's read count in one fixed window."""
    return f"ratelimit:read:{subject}:{window}"


def login_limit_key(kind: Literal["acct", "addr"], value: str) -> str:
    """Failed logins of an account, or attempts from an address."""
    return f"ratelimit:login:{kind}:{value}"


# --- RabbitMQ: exchange, routing keys, audiences -----------------------------------------

EXCHANGE = "fleetstream.events"  # a topic exchange; each API process binds what its sockets need
#: Driver locations travel in batches, one message per worker batch: a message per location
#: cost the live worker a quarter of its CPU in aio-pika at 2,000 phones. The notification hub
#: binds this key for a socket's :data:`LOCATIONS_PATTERN` and hands each location on as
#: :func:`location_key`, so sockets see no difference.
LOCATIONS_KEY = "fleet.locations"
LOCATIONS_PATTERN = "driver.*.location"
#: Drivers coming online and going offline (live only, like locations): what staff sockets bind.
STATUS_PATTERN = "driver.*.status"

#: Dispatchers and admins: every booking, every location.
STAFF = "staff.all"


def customer_audience(customer_id: str) -> str:
    return f"customer.{customer_id}"


def driver_audience(driver_id: str) -> str:
    return f"driver.{driver_id}"


def booking_audience(booking_id: str) -> str:
    """Whoever holds the booking's share link."""
    return f"booking.{booking_id}"


def audience_key(audience: str, event_type: str) -> str:
    """The routing key of an event for one audience."""
    return f"{audience}.{event_type}"


def audience_pattern(audience: str) -> str:
    """The binding that gives a socket everything for its audience."""
    return f"{audience}.#"


def location_key(driver_id: str) -> str:
    return f"{driver_audience(driver_id)}.location"


def status_key(driver_id: str) -> str:
    return f"{driver_audience(driver_id)}.status"


def driver_geofence_key(driver_id: str) -> str:
    return f"{driver_audience(driver_id)}.geofence"


def zone_key(zone_id: str, kind: str) -> str:
    """A zone's enter/exit/dwell events."""
    return f"zone.{zone_id}.{kind}"


# --- MongoDB collections -----------------------------------------------------------------

#: A shard key: fields in order, each hashed or ranged (ascending).
ShardKey = tuple[tuple[str, Literal["hashed", 1]], ...]


@dataclass(frozen=True)
class Collection:
    """A MongoDB collection, and how it is spread over the shards of a sharded cluster.

    ``shard_key`` ``None``: unsharded (small, lives on the database's primary shard). Every
    read of a sharded one names its shard key's first field, so mongos sends it only to the
    shards holding that value, except the ``broadcast`` shapes (a query whose fields are all
    among them), each said why; every update, upsert and insert names the whole key
    (MongoDB refuses an upsert without it).
    ``tests/test_shard_keys.py`` records what the code sends and checks both; the init job
    of ``deploy/k8s/mongodb.yaml`` shards exactly these.
    """

    name: str
    shard_key: ShardKey | None
    why: str
    broadcast: tuple[frozenset[str], ...] = ()


COLLECTIONS = (
    Collection("tracks", (("_id", "hashed"),),
               "the largest: a bucket per driver batch; read by _id through the Redis bucket directory "
               "(streams/track_index.py), so hashed _id spreads writes and keeps every read on one shard",
               # Only when Redis lost a driver's directory: the driver's range, from every shard.
               broadcast=(frozenset({"driver_id", "first_seq", "last_seq", "t0", "t1"}),)),
    Collection("drivers", (("_id", "hashed"),), "latest state per driver, upserted at ping rate by _id"),
    Collection("geofence_events", (("zone_id", "hashed"), ("at", 1)),
               "read per zone, newest first; a busy zone's events split by time"),
    Collection("bookings", (("_id", "hashed"),),
               "read and written by booking id",
               # The lists: a customer's, a driver's, or (staff) all bookings, newest first, merged from every shard.
               broadcast=(frozenset({"customer_id", "driver_id", "status"}),)),
    Collection("booking_events", (("booking_id", "hashed"),), "a booking's timeline, read per booking"),
    Collection("trip_days", (("_id", "hashed"),),
               "a driver's trips and stops of one UTC day per document ({driver}:{day}): reports read a range "
               "as one _id lookup per day, which FerretDB answers without scanning too"),
    Collection("users", None, "small; looked up by email (a unique index needs the shard key)"),
    Collection("refresh_tokens", None, "small; a token family is revoked at once"),
    Collection("devices", None, "one per phone; listed per driver"),
    Collection("zones", None, "small; every worker loads all of them"),
)  # fmt: skip
