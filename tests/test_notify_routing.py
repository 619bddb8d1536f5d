"""Local routing of the notification hub (pure functions)."""

from __future__ import annotations

import pytest

from api.notify import _prefix, stream_id, topic_matches


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("customer.u1.#", "customer.u1.booking.offered", True),
        ("customer.u1.#", "customer.u1", True),
        ("customer.u1.#", "customer.u2.booking.offered", False),
        ("driver.*.location", "driver.d1.location", True),
        ("driver.*.location", "driver.d1.status", False),
        ("driver.*.location", "driver.d.1.location", False),
        ("staff.all.#", "staff.all.eta.update", True),
        ("#", "anything.at.all", True),
    ],
)
def test_topic_matching_follows_amqp(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_prefix_index_only_for_literal_two_word_patterns() -> None:
    assert _prefix("customer.u1.#") == ("customer", "u1")
    assert _prefix("driver.*.location") is None and _prefix("driver.*.#") is None and _prefix("a.#") is None


def test_stream_ids_order_numerically() -> None:
    assert stream_id("1700000000000-10") > stream_id("1700000000000-9") > stream_id("999-99")


def test_a_location_batch_reaches_sockets_as_one_message_per_driver() -> None:
    from datetime import UTC, datetime

    from api.notify import bound_key, unbatch
    from schemas import GpsPing, TelemetryBatch
    from schemas.contracts import LOCATIONS_KEY
    from streams.publish import LOCATIONS_PER_MESSAGE, location_messages

    now = datetime.now(UTC)
    batches = [TelemetryBatch(driver_id=f"d{i}", pings=[GpsPing(driver_id=f"d{i}", seq=i, ts=now, lat=1.0, lon=2.0)])
               for i in range(LOCATIONS_PER_MESSAGE + 3)]  # fmt: skip
    messages = location_messages(batches)
    assert [m.routing_key for m in messages] == [LOCATIONS_KEY, LOCATIONS_KEY]
    import orjson

    split = [kb for m in messages for kb in unbatch(m.routing_key, orjson.loads(m.body))]
    assert [k for k, _ in split] == [f"driver.d{i}.location" for i in range(len(batches))]
    assert split[7][1]["type"] == "driver.location" and split[7][1]["seq"] == 7
    assert bound_key("driver.*.location") == LOCATIONS_KEY and bound_key("driver.d1.#") == "driver.d1.#"
    assert unbatch("driver.d1.status", {"a": 1}) == [("driver.d1.status", {"a": 1})]
    assert unbatch(LOCATIONS_KEY, {"locations": "junk"}) == []


def test_staff_sockets_bind_every_drivers_status_and_location_and_others_only_their_own() -> None:
    from api.notify import topic_matches
    from api.routes.notifications import audience
    from api.security import Principal
    from schemas.contracts import status_key

    staff = Principal(subject="u1", role="dispatcher")
    _, patterns = audience(staff)
    assert any(topic_matches(p, status_key("d7")) for p in patterns)  # a driver going offline: the map greys it
    assert any(topic_matches(p, "driver.d7.location") for p in patterns)
    driver = Principal(subject="u2", role="driver", driver_id="d8")
    _, own = audience(driver)
    assert any(topic_matches(p, status_key("d8")) for p in own)
    assert not any(topic_matches(p, status_key("d7")) for p in own)  # nobody else's
