"""The OpenAPI document describes every answer: each operation has a typed success response."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest


def test_every_operation_declares_the_shape_of_its_success() -> None:
    from api.main import create_app

    spec: dict[str, Any] = create_app().openapi()
    untyped = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = {c: r for c, r in op["responses"].items() if c.startswith("2")}
            typed = [
                c
                for c, r in ok.items()
                if c == "204" or any(m.get("schema") for m in r.get("content", {}).values())  # JSON, or an export's
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


ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"


def test_the_web_ui_is_typed_from_the_current_document() -> None:
    from api.main import openapi_json

    committed = (WEB / "openapi.json").read_text()
    assert committed == openapi_json(), "web/openapi.json is stale: run `make openapi` and rebuild the UI"


def _typecheck(doc: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``npm run types`` and ``npm run check`` of a copy of the UI, typed from ``doc``."""
    copy = tmp_path / "web"
    shutil.copytree(WEB, copy, ignore=shutil.ignore_patterns("node_modules", "dist", "generated"))
    (copy / "node_modules").symlink_to(WEB / "node_modules")
    (copy / "openapi.json").write_text(json.dumps(doc))
    script = "npm run --silent types && npm run --silent check"
    return subprocess.run(["bash", "-c", script], cwd=copy, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(not (WEB / "node_modules" / ".bin" / "tsc").exists(), reason="web/node_modules: `make web`")
def test_a_contract_change_fails_the_ui_build(tmp_path: Path) -> None:
    doc = json.loads((WEB / "openapi.json").read_text())
    assert _typecheck(doc, tmp_path / "same").returncode == 0  # the UI checks against today's API
    # The API renames a field the pages read: the build fails, naming the page and the field.
    view = doc["components"]["schemas"]["BookingView"]
    view["properties"]["state"] = view["properties"].pop("status")
    view["required"] = ["state" if r == "status" else r for r in view["required"]]
    out = _typecheck(doc, tmp_path / "renamed")
    assert out.returncode != 0
    assert "Property 'status' does not exist" in out.stdout and "pages/" in out.stdout, out.stdout[-2000:]
