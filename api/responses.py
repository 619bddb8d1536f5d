"""The error statuses routes declare in the OpenAPI document, with one description each.

Declared per router (each route of it can answer them), so clients and the fuzzer
(``tests/test_fuzz.py``: no undocumented status) know every status to expect. 503 is on
every router: any route may find a backing server unreachable (``api.errors``).
"""

from __future__ import annotations

from typing import Any

_TEXT = {
    401: "missing or invalid credentials",
    403: "not allowed for this caller",
    404: "no such resource (or not visible to this caller)",
    409: "conflicts with the current state",
    413: "body too large",
    422: "invalid input, with the reason",
    429: "rate-limited; see Retry-After",
    503: "a backing service is unavailable; see Retry-After",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a router: the given statuses plus 503."""
    return {code: {"description": _TEXT[code]} for code in sorted({*codes, 503})}
