"""Every topic, Redis key and routing key is spelled once, in ``schemas.contracts``.

A literal spelled elsewhere is a second definition that drifts: the API writing
``booking:{id}`` while a worker reads ``bookings:{id}`` fails only at run time. This reads
the product's code (and the benchmarks' and examples') as syntax, never importing it.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas import contracts

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("core", "api", "streams", "sinks", "schemas", "fleetstream", "benchmarks", "examples")
HOME = ROOT / "schemas" / "contracts.py"
MARK = "\x00"  # stands for a builder's argument, to learn the text it puts around it


def declared() -> tuple[set[str], set[str], set[str]]:
    """(whole names, key prefixes, routing-key prefixes) that contracts declares."""
    names = {t.name for t in contracts.TOPICS}
    names |= {v for k, v in vars(contracts).items() if k.isupper() and isinstance(v, str) and k != "MARK"}
    key_prefixes, route_prefixes = set(), set()
    for fn in vars(contracts).values():
        if not inspect.isfunction(fn) or fn.__module__ != contracts.__name__:
            continue
        params = list(inspect.signature(fn).parameters)
        args = ["acct" if p == "kind" else 7 if p == "window" else MARK for p in params]
        text = fn(*args)
        head = text.split(MARK)[0]
        if not head:
            continue
        (key_prefixes if ":" in head else route_prefixes).add(head)
    return names, key_prefixes, route_prefixes


def strings(tree: ast.AST) -> Iterator[tuple[int, str, bool]]:
    """(line, static text, is an f-string) of each string that is not a docstring."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    inside_fstring = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inside_fstring |= {id(v) for v in node.values}
            text = "".join(v.value if isinstance(v, ast.Constant) else MARK for v in node.values)
            yield node.lineno, text, True
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings | inside_fstring
        ):
            yield node.lineno, node.value, False


def offences(path: Path, names: set[str], keys: set[str], routes: set[str]) -> list[str]:
    out = []
    for line, text, formatted in sorted(strings(ast.parse(path.read_text(), str(path)))):
        where = f"{path.relative_to(ROOT)}:{line}: {text!r}"
        if (
            text in names
            or any(text.startswith(k) for k in keys)
            or (formatted and any(text == r + MARK or text.startswith(r + MARK + ".") for r in routes))
            or text.endswith(".#")
            or ".*." in text
        ):
            out.append(where)
    return out


def test_the_contract_module_declares_what_the_scan_looks_for() -> None:
    names, keys, routes = declared()
    assert {"telemetry.raw", "bookings.events", "drivers:geo:available", "fleet.locations", "staff.all"} <= names
    assert {"driver:", "booking:", "reply:", "notify:", "notify:ids:", "ratelimit:read:", "devtoken:"} <= keys
    assert {"customer.", "driver.", "booking.", "zone."} <= routes


def test_the_scan_finds_a_literal_spelled_outside_the_contracts() -> None:
    names, keys, routes = declared()
    bad = ROOT / "streams" / "_contract_probe.py"  # inside the tree, so the relative path resolves
    try:
        bad.write_text(
            '"""docstrings may say telemetry.raw and driver:{id}."""\n'
            'TOPIC = "telemetry.raw"\n'
            'def k(d):\n    return f"driver:{d}"\n'
            'def r(d):\n    return f"driver.{d}.status"\n'
            'PATTERN = "zone.*.enter"\n'
            'EVENT = "driver.status"\n'  # an event type, not a routing key: allowed
        )
        found = offences(bad, names, keys, routes)
    finally:
        bad.unlink()
    assert [f.split(": ", 1)[1] for f in found] == ["'telemetry.raw'", "'driver:\\x00'", "'driver.\\x00.status'",
                                                    "'zone.*.enter'"]  # fmt: skip


@pytest.mark.parametrize("package", SCANNED)
def test_no_topic_key_or_routing_literal_outside_the_contracts(package: str) -> None:
    names, keys, routes = declared()
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if path == HOME or "node_modules" in path.parts:
            continue
        found += offences(path, names, keys, routes)
    assert not found, "declare these in schemas/contracts.py and import them:\n" + "\n".join(found)


def test_the_driver_hash_is_written_with_the_fields_the_api_reads() -> None:
    """The Lua script that writes ``driver:{id}`` and the model that reads it name the same fields."""
    import re

    from schemas.drivers import DriverState
    from streams.driver_state import EXPIRE_OFFLINE, UPDATE_POSITION

    hset = re.search(r"redis\.call\('HSET', KEYS\[1\],(.*?)\)\n", UPDATE_POSITION, re.S)
    assert hset is not None
    written = re.findall(r"'(\w+)', (?:ARGV\[\d+\]|status)", hset.group(1))
    assert tuple(written) == DriverState.HASH_FIELDS
    assert set(DriverState.HASH_FIELDS) == set(DriverState.model_fields) - {"driver_id"}
    assert "'status', 'offline'" in EXPIRE_OFFLINE
    state = DriverState.from_hash("d1", {"lat": "52.5", "lon": "13.4", "speed_mps": "", "ts": "t", "seq": "7",
                                         "seen": "1.5", "status": "busy", "heading_deg": ""})  # fmt: skip
    assert (state.lat, state.speed_mps, state.seq, state.status) == (52.5, None, 7, "busy")
    assert DriverState.from_hash("d1", {"status": "bogus"}).status is None
