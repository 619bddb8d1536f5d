"""The OpenAPI document describes every answer: each operation has a typed success response."""

from __future__ import annotations

from typing import Any


def test_every_operation_declares_the_shape_of_its_success() -> None:
    from api.main import create_app

    spec: dict[str, Any] = create_app().openapi()
    untyped = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = {c: r for c, r in op["responses"].items() if c.startswith("2")}
            typed = [
                c for c, r in ok.items() if c == "204" or r.get("content", {}).get("application/json", {}).get("schema")
            ]
            if not ok or len(typed) < len(ok):
                untyped.append(f"{method.upper()} {path}: {sorted(ok)}")
    assert not untyped, untyped
    assert len(spec["paths"]) >= 20  # the whole API, not an empty document


def test_a_booking_answer_is_a_booking_view() -> None:
    from api.main import create_app

    spec = create_app().openapi()
    post = spec["paths"]["/v1/bookings"]["post"]["responses"]
    assert post["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BookingView"}
    assert post["202"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BookingPending"}
    view = spec["components"]["schemas"]["BookingView"]
    assert {"booking_id", "status", "customer_id", "pickup", "version"} <= set(view["properties"])
