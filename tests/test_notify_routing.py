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
